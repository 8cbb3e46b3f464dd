// The settings table (src/config/settings.ts) against what is made from it or written beside
// it: config/default.yaml holds every setting with the table's default and nothing else, and
// the tables of README.md and docs/design.md are the ones `npm run docs:config` writes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_CONFIG_PATH, loadConfig } from '../../src/config/config.js';
import { defaultOf, isDerived, type Lookup } from '../../src/config/kinds.js';
import { TABLE_FILES, settingsTable, withSettingsTable } from '../../src/config/reference.js';
import { SETTINGS_BY_KEY } from '../../src/config/settings.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** The table's defaults, derived ones worked out from the others' defaults. */
const defaultValue = (key: string): unknown => {
  const s = SETTINGS_BY_KEY.get(key);
  assert.ok(s, `${key} is a setting`);
  return defaultOf(s, defaults);
};
const defaults: Lookup = Object.assign(
  (key: string): number => {
    const v = defaultValue(key);
    assert.equal(typeof v, 'number');
    return v as number;
  },
  // What the loader makes of a default, as a derived default reads it.
  { value: (key: string) => SETTINGS_BY_KEY.get(key)!.fallback(defaults) },
);

/** Every leaf of a YAML mapping by its dotted key (lists are leaves). */
function leaves(node: Record<string, unknown>, prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(node)) {
    const key = prefix === '' ? k : `${prefix}.${k}`;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) for (const [kk, vv] of leaves(v as Record<string, unknown>, key)) out.set(kk, vv);
    else out.set(key, v);
  }
  return out;
}

describe('config/default.yaml and the settings table', () => {
  const text = readFileSync(DEFAULT_CONFIG_PATH, 'utf8');
  const file = leaves(parseYaml(text) as Record<string, unknown>);

  it('every key of the file is a setting, with the table\'s default', () => {
    assert.ok(file.size > 40, `the file has its keys (${file.size})`);
    for (const [key, value] of file) {
      const s = SETTINGS_BY_KEY.get(key);
      assert.ok(s, `${key} (in the file) is in the table`);
      assert.ok(isDeepStrictEqual(defaultOf(s, defaults), value), `${key}: the file says ${JSON.stringify(value)}, the table ${JSON.stringify(defaultOf(s, defaults))}`);
    }
  });

  it('every setting is in the file; one whose default follows other keys at least as a comment', () => {
    for (const [key, s] of SETTINGS_BY_KEY) {
      if (file.has(key) || !s.inFile) continue;
      assert.ok(isDerived(s.default), `${key} is missing from config/default.yaml`);
      const leaf = key.split('.').at(-1)!;
      const commented = new RegExp(`^\\s*# ${leaf}: ${String(defaultOf(s, defaults))}$`, 'm');
      assert.match(text, commented, `${key} is in config/default.yaml as "# ${leaf}: ${String(defaultOf(s, defaults))}"`);
    }
  });

  it('the loader gives the table\'s defaults for an empty file', () => {
    const c = loadConfig(DEFAULT_CONFIG_PATH, {});
    assert.equal(c.forward.maxInflightPerAccount, defaults('forward.maxInflightPerAccount'));
    assert.equal(c.admin.headersTimeoutMs, 5000);
    assert.equal(c.dns.rateLimit.ipv6PrefixLength, 56);
  });
});

describe('the configuration tables of the docs', () => {
  for (const { path, scope } of TABLE_FILES) {
    it(`${path} holds the ${scope} table made from the settings (npm run docs:config)`, () => {
      const text = readFileSync(`${root}${path}`, 'utf8');
      assert.equal(text, withSettingsTable(text, scope), `${path} differs from the settings table: run npm run docs:config`);
    });
  }

  it('the full table has a row per setting and every PRIVDNS_* variable; the summary the marked ones', () => {
    const all = settingsTable('all');
    for (const [key, s] of SETTINGS_BY_KEY) {
      if (s.inFile) assert.ok(all.includes(`| \`${key}\` |`), key);
      if (s.env) assert.ok(all.includes(`\`${s.env}\``), s.env);
    }
    const summary = settingsTable('summary').split('\n').length - 2;
    assert.equal(summary, [...SETTINGS_BY_KEY.values()].filter((s) => s.summary).length);
    assert.ok(summary < SETTINGS_BY_KEY.size);
  });
});

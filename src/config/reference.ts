// The configuration tables of README.md (the settings marked `summary`) and docs/design.md
// (every setting), made from the table in ./settings.ts. `npm run docs:config` writes them
// between the markers below; test/config/settings.test.ts fails when a file's table differs.
import { isDerived, type Setting } from './kinds.js';
import { SETTINGS_BY_KEY } from './settings.js';

export type TableScope = 'summary' | 'all';

const begin = (scope: TableScope): string => `<!-- settings (${scope}): made by \`npm run docs:config\` from src/config/settings.ts -->`;
const END = '<!-- end of settings -->';

export function settingsTable(scope: TableScope): string {
  const rows = [...SETTINGS_BY_KEY].filter(([, s]) => scope === 'all' || s.summary);
  return [
    '| key | variable | default | values | reload | meaning |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map(([key, s]) => `| ${s.inFile ? `\`${key}\`` : '(variable only)'} | ${s.env ? `\`${s.env}\`` : ''} | ${defaultText(s)} | ${valuesText(s)} | ${s.reload} | ${s.doc} |`),
  ].join('\n');
}

function defaultText(s: Setting<unknown>): string {
  const d = s.default;
  if (isDerived(d)) return d.text;
  if (Array.isArray(d)) return d.length === 0 ? 'none' : d.map((x) => `\`${String(x)}\``).join(', ');
  if (d === '') return 'empty';
  return `\`${String(d)}\``;
}

function valuesText(s: Setting<unknown>): string {
  return s.values === '' ? s.type : s.type === 'integer' ? s.values : `${s.type}: ${s.values}`;
}

/** `text` with the table between its markers made anew; throws if the markers are missing. */
export function withSettingsTable(text: string, scope: TableScope): string {
  const start = text.indexOf(begin(scope));
  const end = text.indexOf(END, start);
  if (start < 0 || end < 0) throw new Error(`no "${begin(scope)}" ... "${END}" markers`);
  return `${text.slice(0, start)}${begin(scope)}\n${settingsTable(scope)}\n${text.slice(end)}`;
}

/** The files that hold a table, and which one. */
export const TABLE_FILES: ReadonlyArray<{ path: string; scope: TableScope }> = [
  { path: 'README.md', scope: 'summary' },
  { path: 'docs/design.md', scope: 'all' },
];

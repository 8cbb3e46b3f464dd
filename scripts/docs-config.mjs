#!/usr/bin/env node
// `npm run docs:config`: writes the configuration tables of README.md and docs/design.md
// from the settings table (src/config/settings.ts, compiled by the build that runs first).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TABLE_FILES, withSettingsTable } from '../dist/src/config/reference.js';

const root = fileURLToPath(new URL('..', import.meta.url));
for (const { path, scope } of TABLE_FILES) {
  const file = join(root, path);
  const before = readFileSync(file, 'utf8');
  const after = withSettingsTable(before, scope);
  if (after !== before) writeFileSync(file, after);
  console.log(`${path}: ${after === before ? 'up to date' : 'table written'}`);
}

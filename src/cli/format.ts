// Human output of the CLI: aligned tables, and DNS records laid out as dig lays them out.

export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

export interface RecordText {
  name: string;
  ttl: number;
  type: string;
  data: string;
}

export interface Sections {
  answer: RecordText[];
  authority: RecordText[];
  additional: RecordText[];
}

/** Each non-empty section under its dig-style heading, one record a line. */
export function sectionLines(s: Sections): string[] {
  const lines: string[] = [];
  for (const section of ['answer', 'authority', 'additional'] as const) {
    if (s[section].length === 0) continue;
    lines.push('', `;; ${section.toUpperCase()} SECTION:`);
    for (const r of s[section]) lines.push([r.name, String(r.ttl), 'IN', r.type, r.data].join('\t'));
  }
  return lines;
}

// Names of accounts and services are DNS labels, lower case (docs/design.md, Admin API), so every
// registered name can appear in a DNS answer exactly as it was registered.
export const DNS_LABEL_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const DNS_LABEL = new RegExp(DNS_LABEL_PATTERN);

export function isDnsLabel(s: string): boolean {
  return DNS_LABEL.test(s);
}

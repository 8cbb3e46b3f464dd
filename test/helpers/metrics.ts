// Reading /metrics in tests: one sample of the Prometheus text format by its exact name and labels.

/**
 * The value of `sample` (a metric name with its labels as the exposition writes them, e.g.
 * `privdns_dns_dropped_total{transport="udp"}`), or undefined when the text has no such line.
 */
export function metricValue(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(sample) && line.charAt(sample.length) === ' ') return Number(line.slice(sample.length + 1));
  }
  return undefined;
}

// The one error of configuration: which key (or PRIVDNS_* variable) is wrong and why.
export class ConfigError extends Error {
  constructor(readonly key: string, problem: string) {
    // `privdns serve` prints this as its one line on stderr; a value quoted from the
    // environment or the file may carry line breaks of its own.
    super(`config: ${key}: ${problem.replace(/[\r\n]+/g, '\\n')}`);
    this.name = 'ConfigError';
  }
}

// The operator subcommands of `privdns`: thin wrappers of the admin API with human output
// (or --json), clear errors and exit codes (see EXIT in ./client.ts), and `dig`, a query of
// the DNS server itself. The API's shapes are the admin's own schemas (src/admin/schemas.ts).
import { parseArgs } from 'node:util';
import type {
  Account, AccountList, AccountWritten, AuditList, Instance, InstanceList, InstanceWritten, ReloadResult, ResolveResult, ServiceList,
  ServiceWithInstances, ServiceWritten, TokenCreated, TokenList,
} from '../admin/schemas.js';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, parseHostPort, type HostPort } from '../config/config.js';
import { AdminClient, CliError, EXIT } from './client.js';
import { DIG_TIMEOUT_S, dig, digServer, queryName, queryType, type DigResult } from './dig.js';
import { sectionLines, table } from './format.js';

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
  /** stderr is a terminal: progress lines are redrawn in place. */
  tty?: boolean;
}

const GLOBAL_OPTIONS = {
  json: { type: 'boolean', default: false },
  admin: { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export const CLI_USAGE = `usage: privdns <command> [options]

  serve [--config FILE]                          run the daemon
  accounts create NAME --subnet CIDR...          create an account owning source subnets
  accounts ls | get NAME | delete NAME
  accounts set-subnets NAME --subnet CIDR...     replace an account's subnets
  services create ACCOUNT NAME --type TYPE [--port N]... [--bind-timeout S] [--ttl S]
                                                 TYPE: private_service, web_service, background_worker
  services ls ACCOUNT | get ACCOUNT NAME | delete ACCOUNT NAME
  instances add ACCOUNT SERVICE ADDRESS [--wait] [--timeout S] [--bind-timeout S]
  instances ls ACCOUNT SERVICE | get ACCOUNT SERVICE ID | rm ACCOUNT SERVICE ID
  tokens create ACCOUNT                          a token that manages only ACCOUNT's services and instances
  tokens list ACCOUNT | revoke ACCOUNT ID        (shown once at creation; listed and revoked by id)
  audit [--since REV] [--account A] [--limit N]  the registry's writes after REV: who, what, revision
  resolve NAME --from SOURCE_IP [--type TYPE]    what DNS answers that source, and why
  reload                                         the daemon reads its config again (as on SIGHUP)
  dig NAME [TYPE] [--server HOST:PORT] [--tcp] [--timeout S] [--config FILE]
                                                 ask the DNS server from this machine (default server:
                                                 the first dns.listen, on loopback if it is a wildcard)

options: --json (machine output)  --admin HOST:PORT  --token TOKEN  -h, --help
environment: PRIVDNS_ADMIN_LISTEN, PRIVDNS_ADMIN_TOKEN, PRIVDNS_DATA_DIR (token file)
exit codes: 0 ok, 1 the API refused, 2 usage, 3 admin API unreachable, 4 instance failed (--wait)`;

type Handler = (args: { positionals: string[]; values: Record<string, unknown>; client: AdminClient; io: Io }) => Promise<number>;

interface Command {
  args: string[];
  /** Positionals that may follow `args`. */
  optional?: string[];
  options?: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;
  run: Handler;
}

const enc = encodeURIComponent;

const COMMANDS: Record<string, Command> = {
  'accounts create': {
    args: ['NAME'],
    options: { subnet: { type: 'string', multiple: true } },
    run: async ({ positionals: [name], values, client, io }) => {
      const subnets = (values.subnet as string[] | undefined) ?? [];
      if (subnets.length === 0) throw new CliError('accounts create needs at least one --subnet CIDR', EXIT.usage);
      const a = await client.request<AccountWritten>('POST', '/v1/accounts', { name, subnets });
      return print(io, values, a, () => `account ${a.name} created: ${a.subnets.join(', ')}`);
    },
  },
  'accounts ls': {
    args: [],
    run: async ({ values, client, io }) => {
      const r = await client.request<AccountList>('GET', '/v1/accounts');
      return print(io, values, r, () => table(['ACCOUNT', 'SUBNETS', 'CREATED'], r.items.map((a) => [a.name, a.subnets.join(','), a.createdAt])));
    },
  },
  'accounts get': {
    args: ['NAME'],
    run: async ({ positionals: [name], values, client, io }) => {
      const a = await client.request<Account>('GET', `/v1/accounts/${enc(name!)}`);
      return print(io, values, a, () => `${a.name}\n  subnets: ${a.subnets.join(', ')}\n  created: ${a.createdAt}`);
    },
  },
  'accounts set-subnets': {
    args: ['NAME'],
    options: { subnet: { type: 'string', multiple: true } },
    run: async ({ positionals: [name], values, client, io }) => {
      const subnets = (values.subnet as string[] | undefined) ?? [];
      if (subnets.length === 0) throw new CliError('accounts set-subnets needs at least one --subnet CIDR', EXIT.usage);
      const a = await client.request<AccountWritten>('PATCH', `/v1/accounts/${enc(name!)}`, { subnets });
      return print(io, values, a, () => `account ${a.name}: ${a.subnets.join(', ')}`);
    },
  },
  'accounts delete': {
    args: ['NAME'],
    run: async ({ positionals: [name], values, client, io }) => {
      await client.request('DELETE', `/v1/accounts/${enc(name!)}`);
      return print(io, values, { deleted: name }, () => `account ${name} deleted, with its services and instances`);
    },
  },
  'services create': {
    args: ['ACCOUNT', 'NAME'],
    options: {
      type: { type: 'string' },
      port: { type: 'string', multiple: true },
      'bind-timeout': { type: 'string' },
      ttl: { type: 'string' },
    },
    run: async ({ positionals: [account, name], values, client, io }) => {
      const type = (values.type as string | undefined) ?? 'private_service';
      const ports = ((values.port as string[] | undefined) ?? []).map((p) => intArg('--port', p));
      const body: Record<string, unknown> = { name, type };
      if (ports.length > 0) body.ports = ports;
      if (values['bind-timeout'] !== undefined) body.bindTimeoutSeconds = intArg('--bind-timeout', values['bind-timeout'] as string);
      if (values.ttl !== undefined) body.ttl = intArg('--ttl', values.ttl as string);
      const s = await client.request<ServiceWritten>('POST', `/v1/accounts/${enc(account!)}/services`, body);
      return print(io, values, s, () => `service ${s.name} (${s.type}${s.ports.length ? `, ports ${s.ports.join(',')}` : ''}) created in ${s.account}`);
    },
  },
  'services ls': {
    args: ['ACCOUNT'],
    run: async ({ positionals: [account], values, client, io }) => {
      const r = await client.request<ServiceList>('GET', `/v1/accounts/${enc(account!)}/services`);
      return print(io, values, r, () => table(['SERVICE', 'TYPE', 'PORTS'], r.items.map((s) => [s.name, s.type, s.ports.join(',') || '-'])));
    },
  },
  'services get': {
    args: ['ACCOUNT', 'NAME'],
    run: async ({ positionals: [account, name], values, client, io }) => {
      const s = await client.request<ServiceWithInstances>('GET', `/v1/accounts/${enc(account!)}/services/${enc(name!)}`);
      return print(io, values, s, () => `${s.name} (${s.type}, ports ${s.ports.join(',') || '-'})\n${instanceTable(s.instances)}`);
    },
  },
  'services delete': {
    args: ['ACCOUNT', 'NAME'],
    run: async ({ positionals: [account, name], values, client, io }) => {
      await client.request('DELETE', `/v1/accounts/${enc(account!)}/services/${enc(name!)}`);
      return print(io, values, { deleted: name }, () => `service ${name} deleted from ${account}`);
    },
  },
  'instances add': {
    args: ['ACCOUNT', 'SERVICE', 'ADDRESS'],
    options: { wait: { type: 'boolean' }, timeout: { type: 'string' }, 'bind-timeout': { type: 'string' } },
    run: async ({ positionals: [account, service, address], values, client, io }) => {
      const body: Record<string, unknown> = { address };
      if (values['bind-timeout'] !== undefined) body.bindTimeoutSeconds = intArg('--bind-timeout', values['bind-timeout'] as string);
      const base = `/v1/accounts/${enc(account!)}/services/${enc(service!)}/instances`;
      let inst: Instance = await client.request<InstanceWritten>('POST', base, body);
      if (!values.wait) return print(io, values, inst, () => `instance ${inst.id} (${inst.address}) registered: ${inst.state}`);
      const limitMs = (values.timeout !== undefined ? intArg('--timeout', values.timeout as string) : inst.bindTimeoutSeconds + 5) * 1000;
      const started = Date.now();
      // On a terminal the progress line is redrawn in place; in a log it is one line a second.
      let lastSecond = -1;
      while (inst.state === 'pending' && Date.now() - started < limitMs) {
        const second = Math.floor((Date.now() - started) / 1000);
        if (!values.json && (io.tty === true || second !== lastSecond)) {
          const pending = inst.ports.filter((p) => p.ok !== true).map((p) => p.port).join(',');
          const line = `waiting for ${inst.id} (${inst.address}) to bind port(s) ${pending}: ${second}s`;
          io.err(io.tty === true ? `\r\x1b[K${line}` : `${line}\n`);
          lastSecond = second;
        }
        await new Promise((r) => setTimeout(r, 250));
        inst = await client.request<Instance>('GET', `${base}/${enc(inst.id)}`);
      }
      if (!values.json && io.tty === true && lastSecond >= 0) io.err('\r\x1b[K');
      print(io, values, inst, () => `instance ${inst.id} (${inst.address}): ${inst.state}${inst.reason ? ` (${inst.reason})` : ''}`);
      return inst.state === 'live' || inst.state === 'running' ? EXIT.ok : EXIT.failed;
    },
  },
  'instances ls': {
    args: ['ACCOUNT', 'SERVICE'],
    run: async ({ positionals: [account, service], values, client, io }) => {
      const r = await client.request<InstanceList>('GET', `/v1/accounts/${enc(account!)}/services/${enc(service!)}/instances`);
      return print(io, values, r, () => instanceTable(r.items));
    },
  },
  'instances get': {
    args: ['ACCOUNT', 'SERVICE', 'ID'],
    run: async ({ positionals: [account, service, id], values, client, io }) => {
      const i = await client.request<Instance>('GET', `/v1/accounts/${enc(account!)}/services/${enc(service!)}/instances/${enc(id!)}`);
      return print(io, values, i, () => JSON.stringify(i, null, 2));
    },
  },
  'instances rm': {
    args: ['ACCOUNT', 'SERVICE', 'ID'],
    run: async ({ positionals: [account, service, id], values, client, io }) => {
      await client.request('DELETE', `/v1/accounts/${enc(account!)}/services/${enc(service!)}/instances/${enc(id!)}`);
      return print(io, values, { deleted: id }, () => `instance ${id} removed from ${account}/${service}`);
    },
  },
  'tokens create': {
    args: ['ACCOUNT'],
    run: async ({ positionals: [account], values, client, io }) => {
      const t = await client.request<TokenCreated>('POST', `/v1/accounts/${enc(account!)}/tokens`);
      return print(io, values, t, () => `${t.token}\ntoken ${t.id} of account ${t.account}: keep it now, it is not shown again`);
    },
  },
  'tokens list': {
    args: ['ACCOUNT'],
    run: async ({ positionals: [account], values, client, io }) => {
      const r = await client.request<TokenList>('GET', `/v1/accounts/${enc(account!)}/tokens`);
      return print(io, values, r, () => table(['TOKEN', 'CREATED', 'BY'], r.items.map((t) => [t.id, t.createdAt, t.createdBy])));
    },
  },
  'tokens revoke': {
    args: ['ACCOUNT', 'ID'],
    run: async ({ positionals: [account, id], values, client, io }) => {
      await client.request('DELETE', `/v1/accounts/${enc(account!)}/tokens/${enc(id!)}`);
      return print(io, values, { revoked: id }, () => `token ${id} of account ${account} revoked`);
    },
  },
  audit: {
    args: [],
    options: { since: { type: 'string' }, account: { type: 'string' }, limit: { type: 'string' } },
    run: async ({ values, client, io }) => {
      const q = new URLSearchParams();
      if (values.since !== undefined) q.set('since', String(intArg('--since', values.since as string)));
      if (values.limit !== undefined) q.set('limit', String(intArg('--limit', values.limit as string)));
      const base = typeof values.account === 'string' ? `/v1/accounts/${enc(values.account)}/audit` : '/v1/audit';
      const r = await client.request<AuditList>('GET', `${base}${q.size > 0 ? `?${q}` : ''}`);
      return print(io, values, r, () => table(
        ['REVISION', 'AT', 'ACTOR', 'ACTION', 'ACCOUNT', 'TARGET', 'DETAIL'],
        r.items.map((e) => [String(e.revision), e.at, e.actor, e.action, e.account, e.target ?? '-', e.detail ?? '']),
      ));
    },
  },
  resolve: {
    args: ['NAME'],
    options: { from: { type: 'string' }, type: { type: 'string' } },
    run: async ({ positionals: [name], values, client, io }) => {
      if (typeof values.from !== 'string') throw new CliError('resolve needs --from SOURCE_IP (the client address to answer as)', EXIT.usage);
      const q = new URLSearchParams({ source: values.from, name: name!, type: (values.type as string | undefined) ?? 'A' });
      const r = await client.request<ResolveResult>('GET', `/v1/resolve?${q}`);
      return print(io, values, r, () => formatResolve(r));
    },
  },
  reload: {
    args: [],
    run: async ({ values, client, io }) => {
      const r = await client.request<ReloadResult>('POST', '/v1/reload');
      return print(io, values, r, () => [
        `config reloaded: hash ${r.hash}`,
        `  applied: ${r.applied.length > 0 ? r.applied.join(', ') : '(nothing changed)'}`,
        ...(r.kept.length > 0 ? [`  kept until a restart: ${r.kept.join(', ')}`] : []),
        ...(r.workersApplied ? [] : ['  warning: a DNS worker did not confirm the new config in time']),
      ].join('\n'));
    },
  },
  dig: {
    args: ['NAME'],
    optional: ['TYPE'],
    options: { server: { type: 'string' }, tcp: { type: 'boolean' }, timeout: { type: 'string' }, config: { type: 'string' } },
    run: async ({ positionals: [name, type], values, io }) => {
      const server = typeof values.server === 'string' ? parseServer(values.server) : configuredServer(values.config as string | undefined, io.env);
      const timeoutS = values.timeout === undefined ? DIG_TIMEOUT_S : intArg('--timeout', values.timeout as string);
      if (timeoutS < 1 || timeoutS > 60) throw new CliError(`--timeout must be 1 to 60 seconds, got ${timeoutS}`, EXIT.usage);
      const r = await dig(queryName(name!), queryType(type ?? 'A'), server, values.tcp === true, timeoutS * 1000);
      return print(io, values, r, () => formatDig(r));
    },
  },
};

export async function runCli(argv: string[], io: Io): Promise<number> {
  const words = argv.filter((a) => !a.startsWith('-'));
  const key = COMMANDS[`${words[0]} ${words[1]}`] ? `${words[0]} ${words[1]}` : (words[0] ?? '');
  const command = COMMANDS[key];
  if (!command) {
    const help = argv.includes('--help') || argv.includes('-h') || argv.length === 0 || argv[0] === 'help';
    (help ? io.out : io.err)(`${help ? '' : `privdns: unknown command "${argv.join(' ')}"\n`}${CLI_USAGE}\n`);
    return help ? EXIT.ok : EXIT.usage;
  }
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...GLOBAL_OPTIONS, ...(command.options ?? {}) },
      allowPositionals: true,
      strict: true,
    });
    const usage = `usage: privdns ${key} ${[...command.args, ...(command.optional ?? []).map((a) => `[${a}]`)].join(' ')}`;
    if (values.help) {
      io.out(`${usage}${Object.keys(command.options ?? {}).map((o) => ` [--${o}]`).join('')}\n`);
      return EXIT.ok;
    }
    const args = positionals.slice(key.split(' ').length);
    if (args.length < command.args.length || args.length > command.args.length + (command.optional?.length ?? 0)) {
      throw new CliError(usage, EXIT.usage);
    }
    const client = new AdminClient({ admin: values.admin as string | undefined, token: values.token as string | undefined, env: io.env });
    return await command.run({ positionals: args, values, client, io });
  } catch (err) {
    if (err instanceof CliError) {
      if (argv.includes('--json') && err.body !== undefined) io.out(`${JSON.stringify(err.body)}\n`);
      io.err(`privdns: ${err.message}\n`);
      return err.exitCode;
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`privdns: ${(err as Error).message}\n`);
      return EXIT.usage;
    }
    throw err;
  }
}

function print(io: Io, values: Record<string, unknown>, data: unknown, human: () => string): number {
  io.out(`${values.json ? JSON.stringify(data) : human()}\n`);
  return EXIT.ok;
}

function intArg(flag: string, s: string): number {
  if (!/^\d+$/.test(s)) throw new CliError(`${flag} must be a whole number, got "${s}"`, EXIT.usage);
  return Number(s);
}

function instanceTable(items: Instance[]): string {
  return table(
    ['INSTANCE', 'ADDRESS', 'STATE', 'REASON'],
    items.map((i) => [i.id, i.address, i.state, i.reason ?? '']),
  );
}

/** Prints an explain result the way dig lays out an answer. */
function formatResolve(r: ResolveResult): string {
  return [`;; status: ${r.rcode}  account: ${r.account ?? '-'}`, `;; reason: ${r.reason}`, ...sectionLines(r)].join('\n');
}

function formatDig(r: DigResult): string {
  return [
    `;; status: ${r.rcode}  flags: ${r.flags.join(' ')}`,
    ...(r.ede ? [`;; EDE: ${r.ede.infoCode}: ${r.ede.extraText}`] : []),
    ...sectionLines(r),
    '',
    `;; SERVER: ${r.server} (${r.transport}${r.retriedOverTcp ? ', after a truncated UDP reply' : ''})`,
  ].join('\n');
}

function parseServer(s: string): HostPort {
  try {
    return parseHostPort('--server', s);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`--server: "${s}" is not host:port`, EXIT.usage);
    throw err;
  }
}

/** The first dns.listen address of the daemon's settings (its file and PRIVDNS_* variables). */
function configuredServer(file: string | undefined, env: Record<string, string | undefined>): HostPort {
  try {
    return digServer(loadConfig(file ?? DEFAULT_CONFIG_PATH, env).dns.listen[0]!);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`${err.message} (or give --server HOST:PORT)`, EXIT.usage);
    throw err;
  }
}

// This daemon's name among the nodes of a cluster: PRIVDNS_NODE_ID when set, else the host
// name and the admin port (two daemons on one host have different admin ports). The one place
// it is decided; config.ts turns it into Config.nodeId, which metrics (privdns_build_info)
// and anything else naming the node take.
import { hostname } from 'node:os';

/** Letters, digits and `._:-`, starting with a letter or digit: safe in a label, a log line, a row. */
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** The node id from PRIVDNS_NODE_ID's value (unset or empty: the default); throws on a bad one. */
export function nodeId(fromEnv: string | undefined, adminPort: number): string {
  if (fromEnv === undefined || fromEnv === '') return `${hostname()}:${adminPort}`;
  if (!NODE_ID.test(fromEnv)) throw new Error(`"${fromEnv}" must be 1-128 letters, digits or ._:- starting with a letter or digit`);
  return fromEnv;
}

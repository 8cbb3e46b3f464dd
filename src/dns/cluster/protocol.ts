// The IPC protocol between the daemon's process and its DNS workers (node:cluster, advanced
// serialisation), both directions. A worker says hello; the daemon answers with init (its slot,
// the config and, with SQLite, the registry file the worker reads its index from itself), the
// registry snapshot in chunks when there is no file (PostgreSQL), and loaded (the snapshot's revision);
// then changes as they commit, each batch acked with the revision applied. stats asks for
// the worker's counters (answered with the same id); config hands it a reloaded
// configuration (acked by configured); stop ends it.
import type { Config } from '../../config/config.js';
import type { IndexedInstance } from '../../registry/store.js';
import type { Account, RegistryChange, Service } from '../../registry/types.js';
import type { ForwarderStats } from '../forward/stats.js';
import type { QueryStatsData } from '../server/counters.js';

export type ToWorker =
  | { t: 'init'; slot: number; config: Config; indexFile: string | null }
  | { t: 'snapshot'; accounts: Account[]; services: Service[]; instances: IndexedInstance[] }
  | { t: 'loaded'; revision: number; unread: boolean }
  /** A resync: the snapshot that follows is built aside and swapped in whole at 'loaded'. */
  | { t: 'reload' }
  | { t: 'changes'; changes: RegistryChange[] }
  | { t: 'stats'; id: number }
  /** A reloaded config (SIGHUP, POST /v1/reload): its live settings apply from the next query; answered by 'configured'. */
  | { t: 'config'; id: number; config: Config }
  | { t: 'stop' };

export type FromWorker =
  | { t: 'hello' }
  | { t: 'ack'; revision: number }
  | { t: 'listening' }
  | { t: 'failed'; message: string }
  | { t: 'stats'; id: number; queries: QueryStatsData; forwarder: ForwarderStats | null }
  | { t: 'configured'; id: number };

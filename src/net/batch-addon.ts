// Loads the optional native addon for batched UDP (native/batch_udp.c, built by node-gyp at
// `npm ci`). Optional: where it was not built (no compiler, not Linux) or does not load, the
// load error is kept and batchIoAvailable() is false, so callers fall back to node:dgram.
// Loaded on first use, not at import: a process that never asks pays nothing.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** An opaque handle of one open socket: only the addon's functions accept it. */
export type NativeSocketHandle = { readonly __batchUdpHandle: unique symbol };

export interface NativeStats {
  received: number;
  /** recvmmsg calls that returned datagrams. */
  batches: number;
  truncated: number;
  receiveErrors: number;
  sent: number;
  /** sendmmsg calls, queued ones included. */
  sendCalls: number;
  /** Replies the kernel refused (EMSGSIZE, unreachable...): dropped. */
  sendErrors: number;
  /** Replies copied into the queue because the socket would block. */
  queued: number;
  /** Replies dropped because the queue was full. */
  dropped: number;
  /** Replies waiting in the queue now. */
  pending: number;
}

/** The addon's functions, as native/batch_udp.c defines them. */
export interface BatchUdpBinding {
  readonly META_WORDS: number;
  readonly MAX_BATCH: number;
  readonly MAX_SLOT: number;
  open(
    host: string,
    port: number,
    batch: number,
    slot: number,
    ipv6Only: boolean,
    recvBuffer: number,
    sendBuffer: number,
    inData: ArrayBuffer,
    inMeta: ArrayBuffer,
    outData: ArrayBuffer,
    outMeta: ArrayBuffer,
    maxPending: number,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
  ): NativeSocketHandle;
  send(handle: NativeSocketHandle, count: number): number;
  close(handle: NativeSocketHandle, done?: () => void): void;
  address(handle: NativeSocketHandle): { address: string; family: 'IPv4' | 'IPv6'; port: number };
  sourceText(handle: NativeSocketHandle, index: number): string;
  stats(handle: NativeSocketHandle): NativeStats;
  ref(handle: NativeSocketHandle, on: boolean): void;
}

/** Where the addon is looked for; PRIVDNS_BATCH_UDP_ADDON names another build (bench/native-asan.sh). */
export function addonPath(): string {
  return process.env.PRIVDNS_BATCH_UDP_ADDON ?? fileURLToPath(new URL('../../../native/build/Release/batch_udp.node', import.meta.url));
}

let loaded: BatchUdpBinding | null = null;
let loadError: Error | null = null;
let tried = false;

function load(): void {
  if (tried) return;
  tried = true;
  if (process.platform !== 'linux') {
    loadError = new Error(`batched UDP needs Linux (recvmmsg/sendmmsg); this is ${process.platform}`);
    return;
  }
  const path = addonPath();
  try {
    const binding = createRequire(import.meta.url)(path) as BatchUdpBinding;
    if (typeof binding.open !== 'function' || binding.META_WORDS !== 10) throw new Error('not the batched UDP addon of this version');
    loaded = binding;
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    loadError = new Error(`batched UDP addon not available (${path}): ${reason}`, { cause: err });
  }
}

/** True where the addon loaded: openBatchSocket() can be used. */
export function batchIoAvailable(): boolean {
  load();
  return loaded !== null;
}

/** Why the addon is not available; null where it loaded. */
export function batchIoLoadError(): Error | null {
  load();
  return loadError;
}

/** The binding, or the load error thrown. */
export function batchBinding(): BatchUdpBinding {
  load();
  if (loaded === null) throw loadError ?? new Error('batched UDP addon not available');
  return loaded;
}

// A real HTTP server standing in for a web service's instance: its health path answers with
// whatever status the test sets now, and every request it gets is recorded (method, target,
// Host header), so a test can show what the checker asked and that it asked nothing else.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface SeenRequest {
  method: string;
  url: string;
  host: string | undefined;
  connection: string | undefined;
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export class HttpInstance {
  readonly requests: SeenRequest[] = [];
  /** What the next requests get: a status, or a handler of the test's own. */
  answer: number | Handler = 200;
  /** Connections accepted, and closed (by either side). */
  connections = 0;
  closed = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server, readonly host: string, readonly port: number) {}

  static async start(host: string, port = 0): Promise<HttpInstance> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => resolve());
    });
    const addr = server.address();
    const inst = new HttpInstance(server, host, typeof addr === 'object' && addr ? addr.port : 0);
    server.on('connection', (s: Socket) => {
      inst.connections++;
      inst.sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        inst.closed++;
        inst.sockets.delete(s);
      });
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      inst.requests.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host, connection: req.headers.connection });
      const a = inst.answer;
      if (typeof a === 'number') res.writeHead(a, { 'content-type': 'text/plain' }).end(`status ${a}\n`);
      else a(req, res);
    });
    return inst;
  }

  /** Requests for `path` so far. */
  hits(path: string): number {
    return this.requests.filter((r) => r.url === path).length;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

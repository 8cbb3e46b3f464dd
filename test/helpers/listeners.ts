// Real TCP listeners standing in for service instances: each accepts and closes, which is all
// the port-binding check asks of a port. Tests open them on loopback addresses of an account's
// subnet and close them all at the end.
import net from 'node:net';

export class ServiceListeners {
  private readonly servers: net.Server[] = [];

  listen(host: string, port: number): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const s = net.createServer((c) => c.destroy());
      s.once('error', reject);
      s.listen(port, host, () => resolve(s));
      this.servers.push(s);
    });
  }

  closeAll(): void {
    for (const s of this.servers.splice(0)) s.close();
  }
}

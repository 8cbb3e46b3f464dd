// Runs the `privdns` binary (dist/src/main.js) as a user runs it: a child process with only
// PATH and the variables given, its exit code and output collected. Killed after `timeoutMs`.
import { spawn } from 'node:child_process';
import { MAIN } from './daemon.js';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runPrivdns(args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// Test helper: Node's HTTP client on a Unix socket, as Firecracker's getting-started guide drives
// Firecracker with `curl --unix-socket`.
import { request as httpRequest } from 'node:http';

export interface HttpReply {
  status: number;
  /** The parsed JSON body (undefined when empty). */
  json: unknown;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/** One request (a fresh connection each time, as curl makes). `body` is sent as JSON unless it is a string or Buffer. */
export function api(socketPath: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const req = httpRequest(
      {
        socketPath,
        method,
        path,
        agent: false,
        headers: {
          Accept: 'application/json',
          ...(data !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, json, text, headers: res.headers });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${path}: no answer in 15 s`)));
    if (data !== undefined) req.write(data);
    req.end();
  });
}

/** The fault_message of a 400 (fails the caller's expectation with the reply when it is not one). */
export function fault(r: HttpReply): string {
  const m = (r.json as { fault_message?: unknown } | undefined)?.fault_message;
  if (r.status !== 400 || typeof m !== 'string') throw new Error(`expected a 400 with a fault_message, got ${r.status} ${r.text}`);
  return m;
}

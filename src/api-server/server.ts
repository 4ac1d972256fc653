// Firecracker's management API over HTTP/1.1 on a Unix socket (node:http), in front of ApiController.
//
// node:http rather than fastify: measured here (bench/api.mjs, docs/api.md), loading fastify costs
// ~84 ms of a ~290 ms start to API-accepting, and the API uses none of what it adds (its routing,
// content-type parsers and schema validation are replaced by ApiController and ./schemas.ts).
//
// The socket: created with mode 0600 (umask 0177 around bind(), then chmod), removed when the
// server closes or the process exits (only if the path is still the socket this server made: same
// device and inode). An existing path is refused unless it is a socket nobody accepts on (a stale
// socket from a crashed VMM, which is replaced); a live socket is never taken over, and a path that
// is not a socket is never removed.
//
// Hostile clients: bodies are read as text up to MAX_BODY_BYTES (Firecracker's default
// http-api-max-payload-size, 51200) and parsed here, so too large, malformed JSON,
// unknown fields, wrong types and wrong-state requests all answer 400 with a fault_message; an
// unknown path or method answers 400 as Firecracker does. Slow clients are bounded by Node's
// headersTimeout/requestTimeout (a request must arrive whole within REQUEST_TIMEOUT_MS) and idle
// keep-alive connections by KEEP_ALIVE_MS; each connection costs one fd and a parser, and the event
// loop never blocks on one, so others keep being served.
import { chmodSync, lstatSync, rmSync, unlinkSync } from 'node:fs';
import { loadAddon } from '../kvm/addon.js';
import { resolve as resolvePath } from 'node:path';
import { recordSocketInode, removeSocketFile, socketFile } from '../main/socket-files.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { ApiController, ApiResponse } from './controller.js';
import { shown } from '../main/config.js';

export const MAX_BODY_BYTES = 51200;
export const REQUEST_TIMEOUT_MS = 10_000;
export const KEEP_ALIVE_MS = 30_000;
/** Connections beyond this are closed at accept (each holds an fd). */
export const MAX_CONNECTIONS = 1024;

/** A user-facing problem with the socket path (exit status 2 from the CLI). */
export class ApiSocketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ApiSocketError';
  }
}

/** Does something accept connections on this Unix socket? */
function probeLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (live: boolean): void => {
      s.destroy();
      resolve(live);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}

/** Make `path` free for bind(): refuse a live socket or a non-socket, remove a stale socket. */
export async function claimSocketPath(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ApiSocketError(`--api-sock ${shown(path)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isSocket()) throw new ApiSocketError(`--api-sock ${shown(path)}: exists and is not a socket (not removed)`);
  if (await probeLive(path)) throw new ApiSocketError(`--api-sock ${shown(path)}: another process is serving on this socket`);
  try {
    unlinkSync(path);
  } catch (e) {
    throw new ApiSocketError(`--api-sock ${shown(path)}: cannot remove the stale socket: ${(e as NodeJS.ErrnoException).code}`);
  }
}

export interface ApiServer {
  readonly server: Server;
  readonly path: string;
  close(): Promise<void>;
}

function send(res: ServerResponse, r: ApiResponse, close = false): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string | number> = close ? { connection: 'close' } : {};
  if (r.status === 204) {
    res.writeHead(204, headers).end();
    return;
  }
  const body = Buffer.from(JSON.stringify(r.body));
  res.writeHead(r.status, { ...headers, 'content-type': 'application/json', 'content-length': body.length }).end(body);
}

const faultOf = (message: string): ApiResponse => ({ status: 400, body: { fault_message: message } });

/**
 * One request: the body is read up to MAX_BODY_BYTES (a larger one is answered at once and its
 * connection closed), parsed as JSON whatever the content type says (curl -d sends
 * x-www-form-urlencoded unless told), and handed to the controller with the path (query and
 * trailing slashes dropped).
 */
function onRequest(controller: ApiController, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/';
  const method = req.method ?? 'GET';
  const tooLarge = (): void => {
    send(res, faultOf(`request body is larger than ${MAX_BODY_BYTES} bytes`), true);
    req.removeAllListeners('data');
    req.resume();
  };
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) return tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  req.on('data', (c: Buffer) => {
    if (over) return;
    size += c.length;
    if (size > MAX_BODY_BYTES) {
      over = true;
      chunks.length = 0;
      tooLarge();
    } else chunks.push(c);
  });
  req.on('error', () => res.destroy());
  req.on('end', () => {
    if (over) return;
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    if (text.trim() !== '') {
      try {
        body = JSON.parse(text);
      } catch (e) {
        return send(res, faultOf(`malformed JSON body: ${shown((e as Error).message)}`));
      }
    }
    controller.handle(method, path, body).then(
      (r) => send(res, r),
      (e: unknown) => send(res, faultOf(`internal error: ${shown((e as Error)?.message ?? e)}`)),
    );
  });
}

/** The HTTP server for `controller` (not listening). */
export function buildServer(controller: ApiController): Server {
  // connectionsCheckingInterval: how often Node enforces the two timeouts (its default is 30 s).
  const server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_MS, connectionsCheckingInterval: 1000, maxHeaderSize: 16 * 1024 }, (req, res) => {
    try {
      onRequest(controller, req, res);
    } catch (e) {
      send(res, faultOf(`internal error: ${shown((e as Error)?.message ?? e)}`));
    }
  });
  server.maxConnections = MAX_CONNECTIONS;
  // Not HTTP at all, headers too large, a timeout: a 400 (or 408) and the connection closed.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    const body = JSON.stringify({ fault_message: `bad HTTP request: ${shown(err.code ?? err.message)}` });
    socket.end(`HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  return server;
}

/** Listen on the Unix socket `path` (claimed first: see claimSocketPath). */
export async function serveApi(controller: ApiController, path: string): Promise<ApiServer> {
  await claimSocketPath(path);
  const server = buildServer(controller);
  // Bound and listening through the addon and handed to the server as an fd: libuv then does not know
  // the path, so closing the server does not unlink() it by name (which the process-wide filter of a
  // running VM refuses); it is removed with unlinkat below.
  const old = process.umask(0o177);
  let fd: number;
  try {
    fd = loadAddon().unixListen(path, 511);
  } catch (e) {
    throw new ApiSocketError(`--api-sock ${shown(path)}: cannot listen: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    process.umask(old);
  }
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    rmSync(path, { force: true });
    throw new ApiSocketError(`--api-sock ${shown(path)}: cannot listen: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  chmodSync(path, 0o600);
  // Removed on close or exit with unlinkat on its directory, which a filtered process may still do
  // (src/main/socket-files.ts), and only while the path is still the socket made here.
  const file = socketFile(resolvePath(path));
  recordSocketInode(file);
  const remove = (): void => removeSocketFile(file);
  process.on('exit', remove);
  return {
    server,
    path,
    async close() {
      process.off('exit', remove);
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
      remove();
    },
  };
}

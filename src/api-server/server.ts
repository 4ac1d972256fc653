// Firecracker's management API over HTTP/1.1 on a Unix socket (fastify), in front of ApiController.
//
// The socket: created with mode 0600 (umask 0177 around bind(), then chmod), removed when the
// server closes or the process exits (only if the path is still the socket this server made: same
// device and inode). An existing path is refused unless it is a socket nobody accepts on (a stale
// socket from a crashed VMM, which is replaced); a live socket is never taken over, and a path that
// is not a socket is never removed.
//
// Hostile clients: bodies are read as text up to MAX_BODY_BYTES (Firecracker's default
// http-api-max-payload-size, 51200) and parsed here, so too large (413→400), malformed JSON,
// unknown fields, wrong types and wrong-state requests all answer 400 with a fault_message; an
// unknown path or method answers 400 as Firecracker does. Slow clients are bounded by Node's
// headersTimeout/requestTimeout (a request must arrive whole within REQUEST_TIMEOUT_MS) and idle
// keep-alive connections by KEEP_ALIVE_MS; each connection costs one fd and a parser, and the event
// loop never blocks on one, so others keep being served.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { ApiController, type ApiResponse } from './controller.js';
import { ApiError } from './schemas.js';
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
  readonly app: FastifyInstance;
  readonly path: string;
  close(): Promise<void>;
}

function send(reply: import('fastify').FastifyReply, r: ApiResponse): void {
  if (r.status === 204) void reply.code(204).send();
  else void reply.code(r.status).header('content-type', 'application/json').send(JSON.stringify(r.body));
}

/** Build the fastify app for `controller` (not listening; tests may call app.inject). */
export function buildApp(controller: ApiController): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: MAX_BODY_BYTES,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_MS,
    connectionTimeout: 0,
    forceCloseConnections: true,
    return503OnClosing: true,
    routerOptions: { ignoreTrailingSlash: true, caseSensitive: true, maxParamLength: 256 },
  });
  // Every body as text, whatever its content type (curl -d sends x-www-form-urlencoded unless told),
  // parsed as JSON here: the parse error becomes a 400 naming the request.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: MAX_BODY_BYTES }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(new ApiError(`malformed JSON body: ${shown((e as Error).message)}`), undefined);
    }
  });
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    let msg: string;
    if (err instanceof ApiError) msg = err.message;
    else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') msg = `request body is larger than ${MAX_BODY_BYTES} bytes`;
    else if (err.statusCode && err.statusCode < 500) msg = `bad request: ${shown(err.message)}`;
    else msg = `internal error: ${shown(err.message)}`;
    send(reply, { status: 400, body: { fault_message: msg } });
  });
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0];
    send(reply, { status: 400, body: { fault_message: `Invalid request method and/or path: ${req.method} ${shown(path)}.` } });
  });
  const handler = async (req: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply): Promise<void> => {
    const path = req.url.split('?')[0].replace(/\/+$/, '') || '/';
    send(reply, await controller.handle(req.method, path, req.body));
  };
  app.route({ method: ['GET', 'PUT', 'PATCH'], url: '/', handler });
  app.route({ method: ['GET', 'PUT', 'PATCH'], url: '/*', handler });
  return app;
}

/** Listen on the Unix socket `path` (claimed first: see claimSocketPath). */
export async function serveApi(controller: ApiController, path: string): Promise<ApiServer> {
  await claimSocketPath(path);
  const app = buildApp(controller);
  app.server.maxConnections = MAX_CONNECTIONS;
  app.server.headersTimeout = REQUEST_TIMEOUT_MS;
  const old = process.umask(0o177);
  try {
    await app.listen({ path });
  } catch (e) {
    throw new ApiSocketError(`--api-sock ${shown(path)}: cannot listen: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    process.umask(old);
  }
  chmodSync(path, 0o600);
  const made = lstatSync(path);
  let removed = false;
  const remove = (): void => {
    if (removed) return;
    removed = true;
    try {
      const now = lstatSync(path);
      if (now.ino === made.ino && now.dev === made.dev) unlinkSync(path);
    } catch {
      // already gone
    }
  };
  process.on('exit', remove);
  return {
    app,
    path,
    async close() {
      process.off('exit', remove);
      await app.close();
      remove();
    },
  };
}

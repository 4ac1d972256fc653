// The API server's entry point for `kindling serve` (src/cli/serve.ts): everything the CLI needs,
// from one module, so the build can write one start-up bundle of it (dist/api-server/index.bundle.js,
// TypeBox included: its ~300 ES modules load in ~22 ms bundled instead of ~70 ms).
export { ApiController, DEFAULT_INSTANCE_ID, FC_DEFAULT_MEM_MIB, type ApiResponse, type ControllerOptions } from './controller.js';
export { ApiSocketError, serveApi, type ApiServer } from './server.js';
export { ApiError, parseBody } from './schemas.js';

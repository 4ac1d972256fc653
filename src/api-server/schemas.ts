// JSON schemas of the Firecracker management API's request bodies, written from Firecracker's
// swagger definitions (src/firecracker/swagger/firecracker.yaml, API 1.x: MachineConfiguration,
// BootSource, Drive, PartialDrive, NetworkInterface, PartialNetworkInterface, Vsock, EntropyDevice,
// Logger, Metrics, InstanceActionInfo, Vm, SerialDevice, RateLimiter, TokenBucket), as TypeBox
// schemas compiled once into checkers.
//
// Rules, as Firecracker's serde structs have them (#[serde(deny_unknown_fields)]): an unknown field
// is an error, every field has exactly the JSON type the swagger gives it (no coercion: "2" is not
// an integer), and an optional field may be absent or null (serde's Option). The same parser serves
// the HTTP bodies and --config-file's sections (parseBody). A body that fails gives one line naming
// the resource and the field path: `machine-config: vcpu_count: expected an integer, got "2"`.
//
// The body is hostile input (any client of the socket): parseBody never throws anything but
// ApiError, never looks at an inherited property (JSON.parse makes "__proto__" an own key, which the
// schema refuses as unknown) and its messages are one line whatever the body holds.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors';
import { Value } from '@sinclair/typebox/value';
import { shown } from '../main/config.js';

/** An API request that cannot be served: HTTP status (400 unless said) and Firecracker's fault_message. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status = 400,
    /** About what the client gave (exit 2 for --config-file); false when the host or the VMM failed (exit 1). */
    readonly user = true,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Optional and nullable (serde's Option<T>): absent, null or a T. */
const opt = <T extends TSchema>(t: T) => Type.Optional(Type.Union([t, Type.Null()]));
const strict = { additionalProperties: false } as const;
const u64 = () => Type.Integer({ minimum: 0 });

export const TokenBucket = Type.Object(
  {
    size: u64(),
    one_time_burst: opt(u64()),
    refill_time: u64(),
  },
  strict,
);

export const RateLimiter = Type.Object(
  {
    bandwidth: opt(TokenBucket),
    ops: opt(TokenBucket),
  },
  strict,
);

export const MachineConfiguration = Type.Object(
  {
    vcpu_count: Type.Integer({ minimum: 1 }),
    mem_size_mib: Type.Integer({ minimum: 1 }),
    smt: opt(Type.Boolean()),
    cpu_template: opt(Type.Union([Type.Literal('C3'), Type.Literal('T2'), Type.Literal('T2S'), Type.Literal('T2CL'), Type.Literal('T2A'), Type.Literal('V1N1'), Type.Literal('None')])),
    track_dirty_pages: opt(Type.Boolean()),
    huge_pages: opt(Type.Union([Type.Literal('None'), Type.Literal('Transparent'), Type.Literal('2M')])),
  },
  strict,
);

/** PATCH /machine-config: every field optional. */
export const PartialMachineConfiguration = Type.Partial(MachineConfiguration, strict);

export const BootSource = Type.Object(
  {
    kernel_image_path: Type.String(),
    initrd_path: opt(Type.String()),
    boot_args: opt(Type.String()),
  },
  strict,
);

export const Drive = Type.Object(
  {
    drive_id: Type.String(),
    path_on_host: opt(Type.String()),
    is_root_device: Type.Boolean(),
    partuuid: opt(Type.String()),
    is_read_only: opt(Type.Boolean()),
    cache_type: opt(Type.Union([Type.Literal('Unsafe'), Type.Literal('Writeback')])),
    rate_limiter: opt(RateLimiter),
    io_engine: opt(Type.Union([Type.Literal('Sync'), Type.Literal('Async')])),
    socket: opt(Type.String()),
  },
  strict,
);

export const PartialDrive = Type.Object(
  {
    drive_id: Type.String(),
    path_on_host: opt(Type.String()),
    rate_limiter: opt(RateLimiter),
  },
  strict,
);

export const NetworkInterface = Type.Object(
  {
    iface_id: Type.String(),
    host_dev_name: Type.String(),
    guest_mac: opt(Type.String()),
    mtu: opt(Type.Integer({ minimum: 68, maximum: 65535 })),
    rx_rate_limiter: opt(RateLimiter),
    tx_rate_limiter: opt(RateLimiter),
  },
  strict,
);

export const PartialNetworkInterface = Type.Object(
  {
    iface_id: Type.String(),
    rx_rate_limiter: opt(RateLimiter),
    tx_rate_limiter: opt(RateLimiter),
  },
  strict,
);

export const Vsock = Type.Object(
  {
    guest_cid: Type.Integer({ minimum: 3 }),
    uds_path: Type.String(),
    vsock_id: opt(Type.String()),
  },
  strict,
);

export const EntropyDevice = Type.Object({ rate_limiter: opt(RateLimiter) }, strict);

export const Logger = Type.Object(
  {
    log_path: opt(Type.String()),
    level: opt(Type.String()),
    show_level: opt(Type.Boolean()),
    show_log_origin: opt(Type.Boolean()),
    module: opt(Type.String()),
  },
  strict,
);

export const Metrics = Type.Object({ metrics_path: Type.String() }, strict);

export const InstanceActionInfo = Type.Object(
  {
    action_type: Type.Union([Type.Literal('FlushMetrics'), Type.Literal('InstanceStart'), Type.Literal('SendCtrlAltDel')]),
  },
  strict,
);

export const VmState = Type.Object({ state: Type.Union([Type.Literal('Paused'), Type.Literal('Resumed')]) }, strict);

export const SerialDevice = Type.Object(
  {
    serial_out_path: opt(Type.String()),
    rate_limiter: opt(TokenBucket),
  },
  strict,
);

/** A checked body as parseBody returns it: null fields removed (they mean absent). */
export type NoNulls<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]: NoNulls<Exclude<T[K], null>> } : Exclude<T, null>;
type B<S extends TSchema> = NoNulls<Static<S>>;

export type MachineConfigurationBody = B<typeof MachineConfiguration>;
export type PartialMachineConfigurationBody = B<typeof PartialMachineConfiguration>;
export type BootSourceBody = B<typeof BootSource>;
export type DriveBody = B<typeof Drive>;
export type PartialDriveBody = B<typeof PartialDrive>;
export type NetworkInterfaceBody = B<typeof NetworkInterface>;
export type VsockBody = B<typeof Vsock>;
export type EntropyBody = B<typeof EntropyDevice>;
export type LoggerBody = B<typeof Logger>;
export type MetricsBody = B<typeof Metrics>;
export type ActionBody = B<typeof InstanceActionInfo>;
export type VmStateBody = B<typeof VmState>;
export type SerialBody = B<typeof SerialDevice>;
export type RateLimiterBody = B<typeof RateLimiter>;
export type TokenBucketBody = B<typeof TokenBucket>;

/** Every body schema by the name parseBody takes (the resource's path, as Firecracker's errors name it). */
export const SCHEMAS = {
  'machine-config': MachineConfiguration,
  'machine-config (PATCH)': PartialMachineConfiguration,
  'boot-source': BootSource,
  drive: Drive,
  'drive (PATCH)': PartialDrive,
  'network-interface': NetworkInterface,
  'network-interface (PATCH)': PartialNetworkInterface,
  vsock: Vsock,
  entropy: EntropyDevice,
  logger: Logger,
  metrics: Metrics,
  actions: InstanceActionInfo,
  vm: VmState,
  serial: SerialDevice,
} as const;

export type SchemaName = keyof typeof SCHEMAS;
type BodyOf<N extends SchemaName> = B<(typeof SCHEMAS)[N]>;

const compiled = new Map<SchemaName, TypeCheck<TSchema>>();
function checker(name: SchemaName): TypeCheck<TSchema> {
  let c = compiled.get(name);
  if (!c) compiled.set(name, (c = TypeCompiler.Compile(SCHEMAS[name])));
  return c;
}

/**
 * `body` (already JSON-parsed) checked against the named schema; returns it typed, or throws an
 * ApiError whose message names the resource and the first wrong field. Null optional fields are
 * removed from the returned copy (they mean "absent").
 */
export function parseBody<N extends SchemaName>(name: N, body: unknown, where: string = name.replace(/ \(PATCH\)$/, '')): BodyOf<N> {
  const c = checker(name);
  if (c.Check(body)) return dropNulls(body) as BodyOf<N>;
  const first = c.Errors(body).First();
  throw new ApiError(`${where}: ${first ? describeError(innermost(first)) : 'invalid body'}`);
}

/**
 * An optional field's union (T | null) reports only "expected union value" at the field: look inside
 * the one non-null member for the first error there (its path under the field's), repeatedly.
 */
function innermost(e: ValueError): ValueError {
  for (let depth = 0; depth < 8 && e.type === ValueErrorType.Union; depth++) {
    const members = ((e.schema as TSchema & { anyOf?: TSchema[] }).anyOf ?? []).filter((m) => (m as { type?: string }).type !== 'null');
    if (members.length !== 1 || e.value === null) break;
    const inner = Value.Errors(members[0], e.value).First();
    if (!inner) break;
    e = { ...inner, path: e.path + inner.path };
  }
  return e;
}

/** A copy of a checked JSON value without null-valued object fields (own keys only). */
function dropNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropNulls);
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v)) {
    const x = (v as Record<string, unknown>)[k];
    if (x !== null) Object.defineProperty(out, k, { value: dropNulls(x), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** `a.b` for the error path `/a/b` ('body' for the body itself). */
export function fieldOf(path: string): string {
  if (path === '') return 'body';
  return path
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .join('.');
}

function expected(schema: TSchema): string {
  const s = schema as { type?: string; anyOf?: TSchema[]; const?: unknown; minimum?: number; maximum?: number };
  if (s.anyOf) {
    const parts = s.anyOf.filter((x) => (x as { type?: string }).type !== 'null');
    if (parts.length && parts.every((p) => (p as { const?: unknown }).const !== undefined)) {
      return `one of ${parts.map((p) => JSON.stringify((p as { const?: unknown }).const)).join(', ')}`;
    }
    return parts.map(expected).join(' or ');
  }
  if (s.const !== undefined) return JSON.stringify(s.const);
  switch (s.type) {
    case 'integer':
      return 'an integer';
    case 'string':
      return 'a string';
    case 'boolean':
      return 'a boolean';
    case 'object':
      return 'an object';
    case 'array':
      return 'an array';
    default:
      return 'a valid value';
  }
}

function got(v: unknown): string {
  if (v === undefined) return 'nothing';
  // JSON text (strings keep their quotes), with the line separators JSON leaves raw escaped too.
  let json: string;
  try {
    json = JSON.stringify(v) ?? String(v);
  } catch {
    json = shown(v); // not JSON data (a cycle, a BigInt): named by its type
  }
  let text = json.replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
  if (text.length > 60) text = text.slice(0, 57) + '...';
  return text;
}

function describeError(e: ValueError): string {
  const field = shown(fieldOf(e.path));
  switch (e.type) {
    case ValueErrorType.ObjectRequiredProperty:
      return `missing field ${field}`;
    case ValueErrorType.ObjectAdditionalProperties:
      return `unknown field ${field}`;
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.NumberMinimum:
      return `${field}: must be at least ${(e.schema as TSchema & { minimum?: number }).minimum}, got ${got(e.value)}`;
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.NumberMaximum:
      return `${field}: must be at most ${(e.schema as TSchema & { maximum?: number }).maximum}, got ${got(e.value)}`;
    default:
      return `${field}: expected ${expected(e.schema)}, got ${got(e.value)}`;
  }
}

/**
 * The segment spec string, `posix:<name>:<dynports>:<nr_ports>:<size_MiB>:<page_shift>`.
 *
 * Field order follows the original's parser (`xseg_parse_spec`) and Archipelago's Python
 * (`Segment.get_spec`): **dynports comes before nr_ports**. The original `xseg` help text and
 * admin guide print `nr_ports:nr_dynports` instead; that text is wrong, and we follow the parser
 * so existing specs such as `posix:archipelago:1024:2048:512:12` keep their meaning.
 * `dynports` is the first dynamic port: ports `[0, dynports)` are static, `[dynports, nr_ports)`
 * dynamic. Missing or empty fields take the defaults of `posix:globalxseg:64:128:256:12`, so
 * `posix:archipelago:` is a valid (abbreviated) spec.
 */
import { archipError } from '../errors.js';

export interface SegmentSpec {
  type: 'posix';
  name: string;
  dynports: number;
  nrPorts: number;
  sizeMiB: number;
  pageShift: number;
}

export const DEFAULT_SPEC: SegmentSpec = {
  type: 'posix',
  name: 'globalxseg',
  dynports: 64,
  nrPorts: 128,
  sizeMiB: 256,
  pageShift: 12,
};

const FIELDS = ['type', 'name', 'dynports', 'nrPorts', 'sizeMiB', 'pageShift'] as const;

function int(field: string, s: string, min: number, max: number): number {
  if (!/^\d+$/.test(s)) throw archipError('EINVAL', `segment spec: ${field} '${s}' is not a number`);
  const n = Number(s);
  if (n < min || n > max)
    throw archipError('EINVAL', `segment spec: ${field} ${n} is outside ${min}..${max}`);
  return n;
}

export function parseSpec(spec: string): SegmentSpec {
  if (typeof spec !== 'string') throw new TypeError('spec must be a string');
  const parts = spec.split(':');
  if (parts.length > FIELDS.length)
    throw archipError('EINVAL', `segment spec '${spec}' has more than ${FIELDS.length} fields`, {
      details: { expected: 'posix:<name>:<dynports>:<nr_ports>:<size_MiB>:<page_shift>' },
    });
  const get = (i: number) => (parts[i] === undefined || parts[i] === '' ? undefined : parts[i]);
  const type = get(0) ?? 'posix';
  if (type !== 'posix')
    throw archipError('EINVAL', `segment type '${type}' is not supported (only 'posix')`, {
      details: { spec },
    });
  const name = get(1) ?? DEFAULT_SPEC.name;
  if (name.length > 200 || name.includes('/'))
    throw archipError('EINVAL_NAME', `segment name '${name}' must be at most 200 characters without '/'`);
  const out: SegmentSpec = {
    type,
    name,
    dynports: get(2) === undefined ? DEFAULT_SPEC.dynports : int('dynports', get(2) as string, 0, 65535),
    nrPorts: get(3) === undefined ? DEFAULT_SPEC.nrPorts : int('nr_ports', get(3) as string, 1, 65536),
    sizeMiB: get(4) === undefined ? DEFAULT_SPEC.sizeMiB : int('size_MiB', get(4) as string, 1, 1 << 20),
    pageShift: get(5) === undefined ? DEFAULT_SPEC.pageShift : int('page_shift', get(5) as string, 9, 21),
  };
  if (out.dynports >= out.nrPorts)
    throw archipError(
      'EINVAL',
      `segment spec: dynports (${out.dynports}) must be below nr_ports (${out.nrPorts}); the order is dynports:nr_ports`,
    );
  return out;
}

export function formatSpec(s: SegmentSpec): string {
  return `${s.type}:${s.name}:${s.dynports}:${s.nrPorts}:${s.sizeMiB}:${s.pageShift}`;
}

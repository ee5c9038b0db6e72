/**
 * `@archipelago/libxseg/segment`: the native shared-memory segment. Importing this subpath loads
 * the addon; importing `@archipelago/libxseg` (the protocol) never does.
 */
export {
  type CallOptions,
  type CreateOptions,
  type JoinOptions,
  Port,
  type PortReport,
  type PortStats,
  type PreparedRequest,
  type Recovery,
  type RespondOptions,
  Segment,
  type SegmentReport,
  type SubmitOptions,
  type XsegReply,
  type XsegRequest,
} from './segment.js';
export { DEFAULT_SPEC, formatSpec, parseSpec, type SegmentSpec } from './spec.js';

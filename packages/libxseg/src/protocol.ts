/**
 * The XSEG protocol: operation codes, request flags, states and the fixed binary layouts of
 * request payloads, as the original libxseg defines them (reference §3.8, §2.3–§2.9).
 * Values are wire-compatible with the original; do not renumber.
 */

/** Operation codes (`X_*` in xseg.h). */
export const Op = {
  PING: 0,
  READ: 1,
  WRITE: 2,
  SYNC: 3,
  TRUNCATE: 4,
  DELETE: 5,
  ACQUIRE: 6,
  RELEASE: 7,
  COPY: 8,
  CLONE: 9,
  COMMIT: 10,
  INFO: 11,
  MAPR: 12,
  MAPW: 13,
  OPEN: 14,
  CLOSE: 15,
  SNAPSHOT: 16,
  HASH: 17,
  CREATE: 18,
  RENAME: 19,
  FLUSH: 20,
  UPDATE: 21,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

export function opName(op: number): string {
  for (const [k, v] of Object.entries(Op)) if (v === op) return `X_${k}`;
  return `X_UNKNOWN(${op})`;
}

/** Request flags (`XF_*`). */
export const XF = {
  NOSYNC: 0x1, // non-blocking acquire
  FLUSH: 0x2,
  FUA: 0x4,
  FORCE: 0x8, // break another owner's lock
  ASSUMEV0: 0x10,
} as const;

/** Request states (`XS_*`). SERVING and CONCLUDED share a value in the original; we keep it. */
export const XS = {
  SERVED: 0x1,
  FAILED: 0x2,
  ACCEPTED: 0x4,
  PENDING: 0x8,
  SERVING: 0xc,
  CONCLUDED: 0xc,
} as const;

/** Flags of a map-reply segment and of X_CREATE segments (`XF_MAPFLAG_*`). */
export const XF_MAPFLAG = { READONLY: 0x1, ZERO: 0x2 } as const;

export const XSEG_MAX_TARGETLEN = 256;

/** Sizes of the fixed payload structs (bytes). */
export const PAYLOAD = {
  /** xseg_request_clone { char target[256]; u32 targetlen; pad; u64 size } */
  clone: 272,
  /** xseg_request_copy / snapshot / rename / reply_hash { char target[256]; u32 targetlen } */
  target: 260,
  /** xseg_reply_info { u64 size } */
  info: 8,
  /** xseg_reply_map header { u32 cnt; pad } */
  mapHeader: 8,
  /** xseg_reply_map_scatterlist { char target[256]; u32 flags; u32 targetlen; u64 offset; u64 size } */
  mapSegment: 280,
  /** xseg_request_create header { u32 cnt; u32 blocksize; u32 create_flags } */
  createHeader: 12,
  /** xseg_create_map_scatterlist { char target[256]; u32 targetlen; u32 flags } */
  createSegment: 264,
} as const;

/** One object segment of a volume I/O, as mapperd answers X_MAPR/X_MAPW. */
export interface MapSegment {
  /** Object name in blockerb. */
  target: string;
  /** XF_MAPFLAG bits: ZERO means no object backs it (reads are zeros). */
  flags: number;
  /** Byte offset inside the object. */
  offset: number;
  /** Bytes covered. */
  size: number;
}

function writeTarget(buf: Buffer, at: number, name: string): void {
  const len = Buffer.byteLength(name, 'latin1');
  if (len > XSEG_MAX_TARGETLEN) throw new RangeError(`target longer than ${XSEG_MAX_TARGETLEN} bytes`);
  buf.fill(0, at, at + XSEG_MAX_TARGETLEN);
  buf.write(name, at, 'latin1');
  buf.writeUInt32LE(len, at + XSEG_MAX_TARGETLEN);
}

function readTarget(buf: Buffer, at: number, lenAt: number): string {
  const len = buf.readUInt32LE(lenAt);
  if (len > XSEG_MAX_TARGETLEN) throw new RangeError(`targetlen ${len} exceeds ${XSEG_MAX_TARGETLEN}`);
  return buf.toString('latin1', at, at + len);
}

/** Encodes the 260-byte `{char target[256]; u32 targetlen}` payload (copy, snapshot, rename, hash reply). */
export function encodeTargetPayload(name: string): Buffer {
  const b = Buffer.alloc(PAYLOAD.target);
  writeTarget(b, 0, name);
  return b;
}

export function decodeTargetPayload(buf: Buffer): string {
  if (buf.length < PAYLOAD.target)
    throw new RangeError(`payload of ${buf.length} bytes, need ${PAYLOAD.target}`);
  return readTarget(buf, 0, 256);
}

/** X_CLONE payload. An empty source means "create an empty volume". Host order, x86 (LE). */
export function encodeClonePayload(source: string, size: bigint): Buffer {
  const b = Buffer.alloc(PAYLOAD.clone);
  writeTarget(b, 0, source);
  b.writeBigUInt64LE(size, 264);
  return b;
}

export function decodeClonePayload(buf: Buffer): { source: string; size: bigint } {
  if (buf.length < PAYLOAD.clone)
    throw new RangeError(`payload of ${buf.length} bytes, need ${PAYLOAD.clone}`);
  return { source: readTarget(buf, 0, 256), size: buf.readBigUInt64LE(264) };
}

/** X_MAPR/X_MAPW reply. */
export function encodeMapReply(segs: readonly MapSegment[]): Buffer {
  const b = Buffer.alloc(PAYLOAD.mapHeader + segs.length * PAYLOAD.mapSegment);
  b.writeUInt32LE(segs.length, 0);
  segs.forEach((s, i) => {
    const at = PAYLOAD.mapHeader + i * PAYLOAD.mapSegment;
    const len = Buffer.byteLength(s.target, 'latin1');
    if (len > XSEG_MAX_TARGETLEN) throw new RangeError('target too long');
    b.write(s.target, at, 'latin1');
    b.writeUInt32LE(s.flags, at + 256);
    b.writeUInt32LE(len, at + 260);
    b.writeBigUInt64LE(BigInt(s.offset), at + 264);
    b.writeBigUInt64LE(BigInt(s.size), at + 272);
  });
  return b;
}

export function decodeMapReply(buf: Buffer): MapSegment[] {
  if (buf.length < PAYLOAD.mapHeader) throw new RangeError('map reply shorter than its header');
  const cnt = buf.readUInt32LE(0);
  if (PAYLOAD.mapHeader + cnt * PAYLOAD.mapSegment > buf.length) {
    throw new RangeError(`map reply claims ${cnt} segments but holds ${buf.length} bytes`);
  }
  const out: MapSegment[] = [];
  for (let i = 0; i < cnt; i++) {
    const at = PAYLOAD.mapHeader + i * PAYLOAD.mapSegment;
    out.push({
      target: readTarget(buf, at, at + 260),
      flags: buf.readUInt32LE(at + 256),
      offset: Number(buf.readBigUInt64LE(at + 264)),
      size: Number(buf.readBigUInt64LE(at + 272)),
    });
  }
  return out;
}

export function encodeInfoReply(size: bigint): Buffer {
  const b = Buffer.alloc(PAYLOAD.info);
  b.writeBigUInt64LE(size, 0);
  return b;
}

export function decodeInfoReply(buf: Buffer): bigint {
  if (buf.length < PAYLOAD.info) throw new RangeError('info reply shorter than 8 bytes');
  return buf.readBigUInt64LE(0);
}

/**
 * On-disk constants of the Archipelago map formats (v0 Pithos hashmaps, v1 0.3.x maps, v2 "AMF."
 * maps). Constants only; see FORMAT.md for the byte grammar that uses them.
 */

/** Big-endian u32 at offset 0 of every v2 map header: ASCII "AMF.". */
export const AMF_SIGNATURE = 0x414d462e;
/** The only map version this package writes. */
export const AMF_VERSION = 2;
/** Bytes of the packed v2 header. */
export const HEADER_V2_SIZE = 32;
/** Bytes read from offset 0 of a map object to detect its version (zero-filled past EOF). */
export const MAX_HEADER_SIZE = 512;
/** Bytes of one v2 map entry record. */
export const ENTRY_V2_SIZE = 128;
/** Longest object name a v2 entry can hold (128 - 1 flag byte - 4 length bytes). */
export const MAX_OBJECT_LEN = 123;
/** Default block size, and the fixed block size of v0 and v1 maps (4 MiB). */
export const DEFAULT_BLOCKSIZE = 4 * 1024 * 1024;
/** A block size must be a power of two strictly greater than this. */
export const MIN_BLOCKSIZE = 128;
/** Bytes of one v0 entry (a raw SHA-256 digest). */
export const V0_ENTRY_SIZE = 32;
/** Bytes of the packed little-endian v1 header. */
export const V1_HEADER_SIZE = 12;
/** Bytes of one v1 entry (flag byte + raw SHA-256 digest). */
export const V1_ENTRY_SIZE = 33;
/** Longest volume name accepted at creation (leaves room for the legacy `archip_` prefix). */
export const MAX_VOLUME_NAME = 82;
/** Largest single I/O on map data (the mapper splits map reads/writes into such chunks). */
export const MAP_IO_CHUNK = 512 * 1024;

/** Persistent per-entry flags (the v2 on-disk flag byte). */
export const ObjFlag = { WRITABLE: 0x1, ARCHIP: 0x2, ZERO: 0x4, DELETED: 0x8 } as const;
/**
 * Persistent map flags (the v2 header flags word). INCOMPLETE: the map is being built (an import
 * under way, or the new name of a rename not yet committed) and must not be used. SPARSE: a map
 * block that holds nothing but plain zero entries may be absent (it reads as those entries); the
 * original mapper does not know it and fails to load such a map (a missing map block fails its
 * read). See FORMAT.md, "Sparse map blocks".
 */
export const MapFlag = { READONLY: 0x1, DELETED: 0x2, INCOMPLETE: 0x4, SPARSE: 0x8 } as const;

/** Offset in a v2 header object of the optional intent record (after the 32-byte header). */
export const INTENT_OFFSET = 32;
/** Big-endian u32 that starts an intent record: ASCII "INTN". */
export const INTENT_MAGIC = 0x494e544e;
/** Bytes of an intent record before the name: magic, kind, name length, epoch. */
export const INTENT_FIXED_SIZE = 14;
/** Intent kinds (the u8 at INTENT_OFFSET + 4). */
export const IntentKind = { RENAMED_FROM: 1, RENAMED_TO: 2, ROLLING_BACK: 3 } as const;

/** Name of the zero block: hex SHA-256 of the empty string. */
export const ZERO_BLOCK = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
/** Largest u64 (epochs are u64). */
export const UINT64_MAX = 0xffffffffffffffffn;

import { largeBuffer } from '@archipelago/fastio';

const KiB = 1024;
const MiB = 1024 * KiB;

export interface ReadPoolOptions {
  /** Most bytes of slabs the pool keeps (default 64 MiB). 0 disables the pool. */
  maxBytes?: number;
  /** Bytes per slab; also the largest read the pool serves (default 4 MiB). A power of two. */
  slabBytes?: number;
  /** Smallest read the pool serves (default 64 KiB; smaller reads are cheap plain allocations). */
  minBytes?: number;
  /** Allocates one slab (default `largeBuffer`: 2 MiB-aligned, huge pages, from @archipelago/fastio). */
  allocate?: (bytes: number) => Buffer;
}

/** A slot handed out by `ReadBufferPool.acquire`; `release` is idempotent. */
export interface ReadLease {
  /** Exactly the requested length, at the start of the slot. */
  readonly buf: Buffer;
  release(): void;
}

interface Slab {
  readonly mem: Buffer;
  /** Size class index the slab is currently carved for. */
  cls: number;
  /** Slots of the current carving. */
  slots: Slot[];
  free: number;
}

interface Slot {
  readonly slab: Slab;
  readonly mem: Buffer;
  readonly cls: number;
}

/** Counters for tests and diagnostics. */
export interface ReadPoolStats {
  slabs: number;
  slabBytes: number;
  /** Slots currently leased. */
  leased: number;
  /** acquire() calls served from the pool. */
  hits: number;
  /** acquire() calls in the pooled size range that found no slot (the caller allocates). */
  misses: number;
  /** Slabs re-carved for another size class. */
  recarves: number;
}

/**
 * Reused read-reply buffers for the NBD server. Fresh anonymous memory is expensive on some VMs
 * (every first touch of a page faults, and large Buffers are fresh mappings each time), so large
 * READ replies are read into slots cut out of a few long-lived slabs and the slot goes back only
 * once the socket write that carried it completed.
 *
 * Slots come in power-of-two size classes from `minBytes` to `slabBytes`; a slab is carved for one
 * class at a time and is re-carved for another class when all its slots are free and the budget
 * allows no new slab. When nothing fits, `acquire` returns undefined: the caller falls back to a
 * plain allocation (it never waits, so a slow client cannot stall others).
 */
export class ReadBufferPool {
  readonly maxBytes: number;
  readonly slabBytes: number;
  readonly minBytes: number;
  private readonly allocate: (bytes: number) => Buffer;
  private readonly minShift: number;
  private readonly slabs: Slab[] = [];
  /** Free slots per class (LIFO: the most recently used slot is the warmest). */
  private readonly freeLists: Slot[][];
  private readonly counters = { leased: 0, hits: 0, misses: 0, recarves: 0 };

  constructor(opts: ReadPoolOptions = {}) {
    const maxBytes = opts.maxBytes ?? 64 * MiB;
    const slabBytes = opts.slabBytes ?? 4 * MiB;
    const minBytes = opts.minBytes ?? 64 * KiB;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new TypeError(`ReadBufferPool: maxBytes must be a non-negative integer, got ${maxBytes}`);
    }
    if (!isPow2(slabBytes) || slabBytes > 1 << 30) {
      throw new TypeError(`ReadBufferPool: slabBytes must be a power of two up to 1 GiB, got ${slabBytes}`);
    }
    if (!isPow2(minBytes) || minBytes > slabBytes) {
      throw new TypeError(`ReadBufferPool: minBytes must be a power of two <= slabBytes, got ${minBytes}`);
    }
    this.maxBytes = maxBytes;
    this.slabBytes = slabBytes;
    this.minBytes = minBytes;
    this.allocate = opts.allocate ?? largeBuffer;
    this.minShift = Math.log2(minBytes);
    this.freeLists = Array.from({ length: Math.log2(slabBytes) - this.minShift + 1 }, () => []);
  }

  get stats(): ReadPoolStats {
    return { slabs: this.slabs.length, slabBytes: this.slabBytes, ...this.counters };
  }

  /** True when a read of `length` bytes is in the size range the pool serves. */
  serves(length: number): boolean {
    return this.maxBytes >= this.slabBytes && length >= this.minBytes && length <= this.slabBytes;
  }

  /** A slot of at least `length` bytes, or undefined (outside the pooled range, or none free). */
  acquire(length: number): ReadLease | undefined {
    if (!this.serves(length)) return undefined;
    const cls = Math.max(0, Math.ceil(Math.log2(length)) - this.minShift);
    const slot = this.freeLists[cls]!.pop() ?? this.grow(cls);
    if (!slot) {
      this.counters.misses++;
      return undefined;
    }
    slot.slab.free--;
    this.counters.hits++;
    this.counters.leased++;
    let live = true;
    return {
      buf: slot.mem.subarray(0, length),
      release: () => {
        if (!live) return;
        live = false;
        this.counters.leased--;
        slot.slab.free++;
        this.freeLists[slot.cls]!.push(slot);
      },
    };
  }

  /** A new slab carved for `cls`, or a fully free slab of another class re-carved; one slot of it. */
  private grow(cls: number): Slot | undefined {
    let slab: Slab | undefined;
    if ((this.slabs.length + 1) * this.slabBytes <= this.maxBytes) {
      let mem: Buffer;
      try {
        mem = this.allocate(this.slabBytes);
      } catch {
        return undefined;
      }
      slab = { mem, cls, slots: [], free: 0 };
      this.slabs.push(slab);
    } else {
      slab = this.slabs.find((s) => s.cls !== cls && s.free === s.slots.length);
      if (!slab) return undefined;
      const old = new Set(slab.slots);
      const list = this.freeLists[slab.cls]!;
      this.freeLists[slab.cls] = list.filter((s) => !old.has(s));
      this.counters.recarves++;
    }
    this.carve(slab, cls);
    return this.freeLists[cls]!.pop();
  }

  private carve(slab: Slab, cls: number): void {
    const size = 1 << (cls + this.minShift);
    const slots: Slot[] = [];
    for (let at = 0; at + size <= this.slabBytes; at += size) {
      slots.push({ slab, mem: slab.mem.subarray(at, at + size), cls });
    }
    slab.cls = cls;
    slab.slots = slots;
    slab.free = slots.length;
    // Reversed, so pops hand out the slab front to back.
    this.freeLists[cls]!.push(...slots.reverse());
  }
}

function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

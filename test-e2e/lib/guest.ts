/**
 * A minimal Linux guest for the tests that need a real VM on an Archipelago volume (live
 * migration, restarts under a running guest): Debian's kernel and a busybox initramfs whose init
 * mounts the virtio disk (ext4) and runs a WRITER that writes checksummed files until told to
 * stop, then unmounts and powers off. Booted by qemu (TCG by default) from an NBD URI such as
 * `vlmc map` prints, with a QMP socket for `migrate`.
 *
 * The writer (in the initramfs's /init, see INIT below), on the guest's /dev/vda:
 * - writes /data/f000000, f000001, ...: file n is the line "archipelago guest writer file <n>\n"
 *   repeated up to (n % 16 + 1) * 64 KiB; fsyncs the file and the directory; then appends
 *   "<name> <sha256>\n" to /writer.log and fsyncs the log. So every file the log names was on
 *   stable storage before its line was.
 * - keeps a quarter of the filesystem free: it removes the oldest files first (fsync of the
 *   directory, then "rm <name>\n" in the log);
 * - says "writer: <n> files" on the serial console every 5 files;
 * - stops on a line "stop" on the serial console (`Guest.stopWriter()`), or on an I/O error
 *   ("writer: ERROR ..."); then syncs, unmounts ("guest: unmounted") and powers off: qemu exits 0.
 * A second boot of the same filesystem goes on after the last logged file.
 *
 * `verifyGuestImage()` checks an exported raw image afterwards: `e2fsck -fn` clean, every file the
 * log names present with the logged sha256 and the content its number gives, removed ones absent.
 *
 * `prepareScriptGuest()` makes a guest that runs a given script on its disk(s) instead of the
 * writer, with host programs and their shared libraries (`ldd`) in its initramfs: fio for the
 * vhost fio verify job (test-e2e/vhost/fio-verify.test.ts).
 *
 * Needs the Debian packages qemu-system-x86, busybox-static, linux-image-cloud-amd64 (or any
 * linux-image with virtio modules) and e2fsprogs; `guestUnavailable()` says which is missing.
 */
import { type ChildProcess, execFile, type SpawnOptions, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { QmpClient } from './qmp.js';

const run = promisify(execFile);

export const QEMU = '/usr/bin/qemu-system-x86_64';
export const BUSYBOX = '/bin/busybox';
const SETPRIV = '/usr/bin/setpriv';
/** Where prepared guests are cached, one directory per hash of their inputs. */
export const CACHE_DIR = '/var/tmp/archip-guest';
/** Modules the guest loads (with their dependencies) unless the kernel has them built in. */
export const GUEST_MODULES = ['virtio_pci', 'virtio_blk', 'ext4'];
/** Changes to the build itself (layout, cmdline) that the inputs' hash must see. */
const BUILD_VERSION = 'archip-guest 1';
const KERNEL_CMDLINE = 'console=ttyS0 quiet panic=-1 8250.nr_uarts=1 i8042.noaux i8042.nokbd';

/** The init script; @MODULES@ becomes the module names in load order. */
const INIT = `#!/bin/sh
# Archipelago test guest: mount /dev/vda (ext4) and write checksummed files until told to stop.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /mnt
up() { cut -d' ' -f1 /proc/uptime; }
echo "guest: init at $(up)s"
fail() { echo "guest: FAILED: $*"; sync; poweroff -f; sleep 10; }
for m in @MODULES@; do insmod /lib/modules/$m.ko || echo "guest: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "no /dev/vda"
  usleep 100000
done
mount -t ext4 -o errors=remount-ro /dev/vda /mnt || fail "cannot mount /dev/vda"
echo "guest: mounted /dev/vda at $(up)s"
# A line "stop" on the serial console stops the writer.
( while read -r line; do case "$line" in *stop*) : > /run/stop ;; esac; done < /dev/ttyS0 ) &

D=/mnt/data
LOG=/mnt/writer.log
mkdir -p $D && touch $LOG && sync $D /mnt $LOG || fail "cannot create $D"
last=$(grep '^f' $LOG | tail -n 1 | cut -d' ' -f1)
n=0; [ -n "$last" ] && n=$(( $(expr "\${last#f}" + 0) + 1 ))
first=$(ls $D | head -n 1)
lo=$n; [ -n "$first" ] && lo=$(expr "\${first#f}" + 0)
echo "writer: started at $(up)s, file $n"
err() { echo "writer: ERROR: $*"; }
while [ ! -e /run/stop ]; do
  set -- $(df -k /mnt | tail -n 1)
  total=$2; avail=$4
  while [ "$avail" -lt $((total / 4 + 1024)) ] && [ $lo -lt $n ]; do
    f=$(printf 'f%06d' $lo)
    rm -f $D/$f && sync $D || { err "rm $f"; break 2; }
    echo "rm $f" >> $LOG && sync $LOG || { err "log rm $f"; break 2; }
    lo=$((lo + 1))
    set -- $(df -k /mnt | tail -n 1)
    avail=$4
  done
  f=$(printf 'f%06d' $n)
  yes "archipelago guest writer file $n" | head -c $(( (n % 16 + 1) * 65536 )) > $D/$f || { err "write $f"; break; }
  sync $D/$f $D || { err "fsync $f"; break; }
  sum=$(sha256sum $D/$f) || { err "read $f"; break; }
  echo "$f \${sum%% *}" >> $LOG && sync $LOG || { err "log $f"; break; }
  n=$((n + 1))
  [ $((n % 5)) -eq 0 ] && echo "writer: $n files"
done
echo "writer: stopped at $(up)s after $n files"
sync
umount /mnt || fail "cannot unmount /mnt"
echo "guest: unmounted, powering off"
poweroff -f
sleep 10
`;

/** The content of the writer's file number `n`. */
export function writerFileContent(n: number): Buffer {
  const line = Buffer.from(`archipelago guest writer file ${n}\n`);
  const size = ((n % 16) + 1) * 65536;
  const out = Buffer.alloc(size);
  for (let off = 0; off < size; off += line.length) line.copy(out, off);
  return out;
}

// --- availability -------------------------------------------------------------------------------

/** Is the ELF file at `path` statically linked (no PT_INTERP program header)? */
function isStaticElf(path: string): boolean {
  const b = readFileSync(path);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (b.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

interface KernelChoice {
  version: string;
  vmlinuz: string;
  modulesDir: string;
}

/** The newest installed Debian kernel with its modules, preferring the small cloud flavour. */
function findKernel(): KernelChoice | null {
  if (!existsSync('/boot')) return null;
  const found: KernelChoice[] = [];
  for (const f of readdirSync('/boot')) {
    if (!f.startsWith('vmlinuz-')) continue;
    const version = f.slice('vmlinuz-'.length);
    const modulesDir = join('/lib/modules', version);
    if (existsSync(join(modulesDir, 'modules.dep')))
      found.push({ version, vmlinuz: join('/boot', f), modulesDir });
  }
  const rank = (k: KernelChoice) => (k.version.endsWith('-cloud-amd64') ? 1 : 0);
  found.sort((a, b) => rank(b) - rank(a) || b.version.localeCompare(a.version, 'en', { numeric: true }));
  return found[0] ?? null;
}

/** Why the guest cannot run here (a missing Debian package), or null. */
export function guestUnavailable(): string | null {
  const missing: string[] = [];
  if (!existsSync(QEMU)) missing.push('qemu-system-x86 (qemu-system-x86_64)');
  if (!existsSync(BUSYBOX) || !isStaticElf(BUSYBOX)) missing.push('busybox-static (a static /bin/busybox)');
  if (!findKernel()) missing.push('linux-image-cloud-amd64 (/boot/vmlinuz-* with /lib/modules)');
  for (const t of ['mkfs.ext4', 'e2fsck', 'debugfs']) {
    if (!existsSync(join('/usr/sbin', t)) && !existsSync(join('/sbin', t))) missing.push(`e2fsprogs (${t})`);
  }
  if (missing.length === 0) return null;
  return `the qemu guest needs Debian packages: ${missing.join(', ')} (scripts/test.sh installs them)`;
}

// --- initramfs ----------------------------------------------------------------------------------

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

/** A cpio archive in the "newc" format the kernel unpacks as initramfs. */
function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 }] as CpioEntry[]) {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const isDir = (e.mode & 0o170000) === 0o040000;
    const fields = [
      e.name === 'TRAILER!!!' ? 0 : ino++,
      e.mode,
      0,
      0,
      isDir ? 2 : 1,
      0,
      data.length,
      0,
      0,
      e.rdev?.[0] ?? 0,
      e.rdev?.[1] ?? 0,
      name.length,
      0,
    ];
    const header = Buffer.from(`070701${fields.map(hex).join('')}`);
    parts.push(header, name, pad4(header.length + name.length), data, pad4(data.length));
  }
  return Buffer.concat(parts);
}

interface ModuleFile {
  name: string;
  path: string;
}

/** `names` and their dependencies (modules.dep), in load order; built-in ones left out. */
function moduleLoadOrder(modulesDir: string, names: string[]): ModuleFile[] {
  const norm = (s: string) => s.replace(/-/g, '_');
  const modName = (p: string) => norm(basename(p).replace(/\.ko(\.(xz|zst|gz))?$/, ''));
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [mod, rest] = line.split(':');
    if (!mod || rest === undefined) continue;
    deps.set(modName(mod), { path: mod, deps: rest.trim().split(/\s+/).filter(Boolean) });
  }
  const builtinFile = join(modulesDir, 'modules.builtin');
  const builtin = new Set(
    existsSync(builtinFile) ? readFileSync(builtinFile, 'utf8').split('\n').filter(Boolean).map(modName) : [],
  );
  const order: ModuleFile[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const d = deps.get(name);
    if (!d) {
      if (builtin.has(name)) return;
      throw new Error(`kernel module ${name} is neither in ${modulesDir}/modules.dep nor built in`);
    }
    for (const p of d.deps) visit(modName(p));
    order.push({ name, path: join(modulesDir, d.path) });
  };
  for (const n of names) visit(norm(n));
  return order;
}

/** A module file's content, decompressed (busybox insmod takes plain .ko files). */
async function moduleContent(path: string): Promise<Buffer> {
  if (path.endsWith('.gz')) return gunzipSync(await readFile(path));
  if (path.endsWith('.xz') || path.endsWith('.zst')) {
    const tool = path.endsWith('.xz') ? 'xz' : 'zstd';
    const { stdout } = await run(tool, ['-dc', path], { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  }
  return readFile(path);
}

export interface PreparedGuest {
  /** The cache directory holding kernel and initramfs. */
  dir: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  kernelVersion: string;
  /** Modules the init script loads, in order. */
  modules: string[];
  /** Whether this call found the build in the cache. */
  cached: boolean;
  /** Time this call took (hashing the inputs, and building when not cached). */
  ms: number;
}

/**
 * Builds (once: cached under CACHE_DIR/<hash of the inputs>) the guest's kernel and initramfs:
 * the installed Debian kernel, a static busybox, the virtio/ext4 modules and the writer's init.
 * Safe to call from concurrent test files (each builds aside, then renames into place).
 */
export async function prepareGuest(): Promise<PreparedGuest> {
  const t0 = Date.now();
  const why = guestUnavailable();
  if (why) throw new Error(why);
  const kernel = findKernel()!;
  const modules = moduleLoadOrder(kernel.modulesDir, GUEST_MODULES);
  const init = INIT.replace('@MODULES@', modules.map((m) => m.name).join(' '));
  const kernelBytes = await readFile(kernel.vmlinuz);
  const busybox = await readFile(BUSYBOX);
  const moduleBytes = await Promise.all(modules.map((m) => moduleContent(m.path)));
  const h = createHash('sha256').update(`${BUILD_VERSION}\0${KERNEL_CMDLINE}\0${init}\0`);
  h.update(kernelBytes).update(busybox);
  modules.forEach((m, i) => {
    h.update(`\0${m.name}\0`).update(moduleBytes[i]!);
  });
  const dir = join(CACHE_DIR, h.digest('hex').slice(0, 16));
  const result = (cached: boolean): PreparedGuest => ({
    dir,
    kernel: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initramfs.cpio'),
    cmdline: KERNEL_CMDLINE,
    kernelVersion: kernel.version,
    modules: modules.map((m) => m.name),
    cached,
    ms: Date.now() - t0,
  });
  if (existsSync(join(dir, 'initramfs.cpio'))) return result(true);

  const dirs = ['bin', 'dev', 'proc', 'sys', 'run', 'mnt', 'lib', 'lib/modules'];
  const cpio = cpioNewc([
    ...dirs.map((d) => ({ name: d, mode: 0o040755 })),
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    { name: 'bin/busybox', mode: 0o100755, data: busybox },
    { name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') },
    { name: 'init', mode: 0o100755, data: Buffer.from(init) },
    ...modules.map((m, i) => ({ name: `lib/modules/${m.name}.ko`, mode: 0o100644, data: moduleBytes[i]! })),
  ]);
  await mkdir(CACHE_DIR, { recursive: true });
  await publishBuild(dir, {
    vmlinuz: kernelBytes,
    'initramfs.cpio': cpio,
    init,
    'inputs.json': `${JSON.stringify({ kernel: kernel.vmlinuz, version: kernel.version, busybox: BUSYBOX, modules }, null, 2)}\n`,
  });
  return result(false);
}

/**
 * Writes `files` into a new directory beside `dir`, then renames it to `dir`: concurrent builders
 * of the same inputs never see a half-written build (the second one uses the first one's).
 */
async function publishBuild(dir: string, files: Record<string, Buffer | string>): Promise<void> {
  const tmp = await mkdtemp(`${dir}.tmp-`);
  await chmod(tmp, 0o755);
  for (const [name, data] of Object.entries(files)) await writeFile(join(tmp, name), data);
  try {
    await rename(tmp, dir);
  } catch (e) {
    // Another process built the same inputs first: use theirs.
    await rm(tmp, { recursive: true, force: true });
    if (!existsSync(join(dir, 'initramfs.cpio'))) throw e;
  }
}

// --- guests that run a script ---------------------------------------------------------------------

/**
 * The files a host program needs to run in the guest: the program and every shared library `ldd`
 * names (the dynamic loader too), each at its host path (symlinks followed), with the directories
 * they need, as initramfs entries. For a dynamically linked tool such as Debian's fio (its
 * libraries are ~84 MiB: librbd, libglusterfs and theirs): the guest needs the RAM to hold them.
 */
async function programEntries(programs: string[]): Promise<{ entries: CpioEntry[]; libDirs: string[] }> {
  const files = new Set<string>();
  for (const prog of programs) {
    files.add(prog);
    const { stdout } = await run('ldd', [prog]);
    for (const line of stdout.split('\n')) {
      // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
      const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
      if (m) files.add(m[1]!);
      else if (/not found/.test(line)) throw new Error(`${prog}: ldd: ${line.trim()}`);
    }
  }
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const entries: CpioEntry[] = [...dirs].sort().map((d) => ({ name: d, mode: 0o040755 }));
  for (const f of [...files].sort()) {
    entries.push({ name: f.slice(1), mode: 0o100755, data: await readFile(f) }); // readFile follows symlinks
  }
  const libDirs = [
    ...new Set([...files].filter((f) => !programs.includes(f)).map((f) => f.slice(0, f.lastIndexOf('/')))),
  ];
  return { entries, libDirs };
}

export interface ScriptGuestOptions {
  /** Names the cached build (`CACHE_DIR/<hash>-<name>`). */
  name: string;
  /**
   * A busybox sh script run once /dev/vda is there (PATH has /bin and the programs' directories;
   * LD_LIBRARY_PATH their libraries'). Its serial output is the test's to read.
   */
  script: string;
  /** Host programs to put in the guest, with their shared libraries (e.g. /usr/bin/fio). */
  programs?: string[];
}

/**
 * A guest that runs `opts.script` on its virtio disk instead of the writer: the prepared guest's
 * initramfs with a second archive after it (the kernel unpacks both; later files win) holding an
 * /init that loads the modules, waits for /dev/vda, prints "guest: script start", runs the script,
 * prints "guest: script exit <status>" and powers off; and `opts.programs` with their libraries.
 * Built once per inputs (cached like `prepareGuest`). Boot it with `bootGuest({ guest })`, with
 * `memoryMiB` room for the programs (fio: 384).
 */
export async function prepareScriptGuest(opts: ScriptGuestOptions): Promise<PreparedGuest> {
  const t0 = Date.now();
  const base = await prepareGuest();
  const programs = opts.programs ?? [];
  for (const p of programs) if (!existsSync(p)) throw new Error(`${p} is not installed on this host`);
  const { entries, libDirs } = await programEntries(programs);
  const binDirs = [...new Set(programs.map((p) => p.slice(0, p.lastIndexOf('/'))))];
  const init = `#!/bin/sh
export PATH=/bin${binDirs.map((d) => `:${d}`).join('')}
export LD_LIBRARY_PATH=${libDirs.join(':')}
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /dev/shm
mount -t tmpfs tmpfs /dev/shm
for m in ${base.modules.join(' ')}; do insmod /lib/modules/$m.ko || echo "guest: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -gt 300 ] && { echo "guest: FAILED: no /dev/vda"; poweroff -f; }
  usleep 100000
done
cat > /run/script <<'ARCHIP_SCRIPT_EOF'
${opts.script}
ARCHIP_SCRIPT_EOF
echo "guest: script start at $(cut -d' ' -f1 /proc/uptime)s"
sh /run/script
echo "guest: script exit $? at $(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
sleep 10
`;
  const h = createHash('sha256').update(`${BUILD_VERSION} script\0${base.dir}\0${init}\0`);
  for (const e of entries) h.update(`${e.name}\0${e.mode}\0${e.data?.length ?? 0}\0`);
  for (const e of entries) if (e.data) h.update(e.data);
  const dir = join(CACHE_DIR, `${h.digest('hex').slice(0, 16)}-${opts.name}`);
  const result = (cached: boolean): PreparedGuest => ({
    ...base,
    dir,
    initrd: join(dir, 'initramfs.cpio'),
    cached,
    ms: Date.now() - t0,
  });
  if (existsSync(join(dir, 'initramfs.cpio'))) return result(true);
  const overlay = cpioNewc([
    { name: 'run', mode: 0o040755 },
    { name: 'tmp', mode: 0o041777 },
    ...entries,
    { name: 'init', mode: 0o100755, data: Buffer.from(init) },
  ]);
  await publishBuild(dir, { 'initramfs.cpio': Buffer.concat([await readFile(base.initrd), overlay]), init });
  return result(false);
}

// --- disks --------------------------------------------------------------------------------------

/** An empty ext4 filesystem of `sizeMiB` in a (sparse) image file at `path`: no root, no loop. */
export async function makeExt4Image(path: string, sizeMiB = 64): Promise<void> {
  await writeFile(path, '');
  await run('truncate', ['-s', `${sizeMiB}M`, path]);
  await run('mkfs.ext4', ['-F', '-q', '-L', 'archip-guest', '-E', 'nodiscard', path], {
    env: { ...process.env, PATH: `/usr/sbin:/sbin:/usr/bin:/bin:${process.env.PATH ?? ''}` },
  });
}

/** Runs a `vlmc` command and resolves with its stdout, failing on error: `Env.ok`, `Host.ok`. */
export type VlmcOk = (...args: string[]) => Promise<string>;

export interface GuestDisk {
  /** The ext4 image imported. */
  image: string;
  imageSha256: string;
  /** The volume imported, its snapshot, and the clones made of the snapshot. */
  volume: string;
  snapshot: string;
  clones: string[];
}

/**
 * The guest's disk as issue 15 has it: an empty ext4 image of `sizeMiB` at `<dir>/<volume>.img`,
 * imported (`vlmc import`) as `volume`, snapshotted as `<volume>-snap`, and cloned from the
 * snapshot into each of `clones` (the guests boot from clones). `vlmc` runs the commands (an
 * `Env`'s or a `Host`'s `ok`).
 */
export async function makeGuestDisk(
  vlmc: VlmcOk,
  dir: string,
  opts: { volume?: string; clones?: string[]; sizeMiB?: number } = {},
): Promise<GuestDisk> {
  const volume = opts.volume ?? 'guest-base';
  const snapshot = `${volume}-snap`;
  const image = join(dir, `${volume}.img`);
  await makeExt4Image(image, opts.sizeMiB ?? 64);
  const imageSha256 = createHash('sha256')
    .update(await readFile(image))
    .digest('hex');
  await vlmc('import', image, volume);
  await vlmc('snapshot', volume, snapshot);
  const clones = opts.clones ?? [];
  for (const c of clones) await vlmc('create', c, '--snap', snapshot);
  return { image, imageSha256, volume, snapshot, clones };
}

export interface GuestImageReport {
  /** Files the log names that must exist (written, not removed since). */
  files: number;
  /** Files the writer removed to keep space free. */
  removed: number;
  /** Bytes of the live files. */
  bytes: number;
  /** Highest file number the log names, or -1. */
  last: number;
  /** e2fsck's output. */
  fsck: string;
}

/**
 * Checks a raw image the writer wrote: `e2fsck -fn` clean; every file /writer.log names (and does
 * not remove later) exists with the logged sha256, which is also the sha256 of the content its
 * number gives; removed files are gone; no file in /data that the log does not name. Throws with
 * the first problem; returns counts.
 */
export async function verifyGuestImage(image: string): Promise<GuestImageReport> {
  const env = { ...process.env, PATH: `/usr/sbin:/sbin:/usr/bin:/bin:${process.env.PATH ?? ''}` };
  const fsck = await new Promise<{ code: number; out: string }>((resolve) => {
    execFile('e2fsck', ['-fn', image], { env }, (err, stdout, stderr) => {
      const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
  if (fsck.code !== 0) throw new Error(`e2fsck -fn ${image} exited ${fsck.code}:\n${fsck.out}`);
  await mkdir(CACHE_DIR, { recursive: true });
  const out = await mkdtemp(join(CACHE_DIR, 'verify-'));
  try {
    await run('debugfs', ['-R', `rdump /data ${out}`, image], { env });
    await run('debugfs', ['-R', `dump /writer.log ${join(out, 'writer.log')}`, image], { env });
    const log = await readFile(join(out, 'writer.log'), 'utf8');
    const live = new Map<string, string>();
    let removed = 0;
    let last = -1;
    for (const line of log.split('\n')) {
      if (!line) continue;
      const rm = /^rm (f\d{6})$/.exec(line);
      const wr = /^(f\d{6}) ([0-9a-f]{64})$/.exec(line);
      if (rm) {
        if (!live.delete(rm[1]!)) throw new Error(`writer.log removes ${rm[1]} which it never wrote`);
        removed++;
      } else if (wr) {
        live.set(wr[1]!, wr[2]!);
        last = Math.max(last, Number(wr[1]!.slice(1)));
      } else throw new Error(`writer.log: bad line ${JSON.stringify(line)}`);
    }
    const present = new Set(existsSync(join(out, 'data')) ? readdirSync(join(out, 'data')) : []);
    let bytes = 0;
    for (const [name, sum] of live) {
      if (!present.has(name)) throw new Error(`${name} is in writer.log but not on the disk`);
      const data = await readFile(join(out, 'data', name));
      const got = createHash('sha256').update(data).digest('hex');
      if (got !== sum) throw new Error(`${name}: sha256 ${got} on the disk, ${sum} in writer.log`);
      const want = createHash('sha256')
        .update(writerFileContent(Number(name.slice(1))))
        .digest('hex');
      if (want !== sum) throw new Error(`${name}: the logged sha256 is not that of the file's content`);
      bytes += data.length;
      present.delete(name);
    }
    if (present.size > 0) throw new Error(`files on the disk that writer.log does not name: ${[...present]}`);
    return { files: live.size, removed, bytes, last, fsck: fsck.out };
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

// --- booting ------------------------------------------------------------------------------------

/** The qemu -blockdev of an NBD URI (`nbd+unix:///name?socket=PATH` or `nbd://host:port/name`). */
export function nbdBlockdev(
  uri: string,
  nodeName = 'disk0',
  reconnectDelay?: number,
): Record<string, unknown> {
  const u = new URL(uri);
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  let server: Record<string, unknown>;
  if (u.protocol === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (!socket) throw new Error(`${uri}: no socket= parameter`);
    server = { type: 'unix', path: socket };
  } else if (u.protocol === 'nbd:') {
    server = { type: 'inet', host: u.hostname, port: u.port || '10809' };
  } else throw new Error(`${uri}: not an NBD URI`);
  return {
    driver: 'nbd',
    'node-name': nodeName,
    server,
    ...(exportName ? { export: exportName } : {}),
    ...(reconnectDelay !== undefined ? { 'reconnect-delay': reconnectDelay } : {}),
  };
}

export interface BootOptions {
  /** The disk: an NBD URI as `vlmc map` prints. */
  diskUri: string;
  /** Where qemu listens for QMP (a unix socket path). */
  qmpSocket: string;
  /** Start as a migration destination, e.g. `unix:/path/to/migration.sock` (qemu -incoming). */
  incoming?: string;
  /** A prepared guest (default: `prepareGuest()`). */
  guest?: PreparedGuest;
  /** 'tcg' (default: nested KVM is unreliable) or 'kvm'. */
  accel?: 'tcg' | 'kvm';
  memoryMiB?: number;
  /** qemu's NBD client reconnects for this many seconds before failing I/O (default: it does not). */
  reconnectDelay?: number;
  /** More qemu arguments. */
  extra?: string[];
  /** Starts the process instead of child_process.spawn: e.g. a `Host`'s spawn, inside its namespace. */
  spawn?: (cmd: string, args: string[], opts: SpawnOptions) => ChildProcess;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A running guest: the qemu process, its QMP client, its serial console. */
export class Guest {
  /** Everything the guest wrote on its serial console. */
  serial = '';
  /** qemu's stderr. */
  stderr = '';
  /** When qemu was started (Date.now()). */
  readonly startedAt = Date.now();
  /** Resolves when qemu exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly waiters: Array<() => void> = [];
  /** Its QMP client (connected by `bootGuest`). */
  qmp!: QmpClient;

  constructor(readonly proc: ChildProcess) {
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        this.wake();
        resolve({ code, signal });
      });
    });
    proc.stdout?.setEncoding('utf8');
    proc.stdout?.on('data', (d: string) => {
      this.serial += d.replace(/\r/g, '');
      this.wake();
    });
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (d: string) => {
      this.stderr += d;
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Has qemu exited (and how)? */
  get exitStatus(): { code: number | null; signal: NodeJS.Signals | null } | null {
    return this.exit;
  }

  /** The highest "writer: N files" so far, or 0. */
  get files(): number {
    let max = 0;
    for (const m of this.serial.matchAll(/writer: (\d+) files/g)) max = Math.max(max, Number(m[1]));
    return max;
  }

  /** Waits until `test(serial)` returns a value (not undefined/false); fails if qemu exits first. */
  async waitSerial<T>(
    test: (serial: string) => T | undefined | false,
    timeoutMs = 30_000,
    what = 'output',
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = test(this.serial);
      if (v !== undefined && v !== false) return v;
      const left = deadline - Date.now();
      if (this.exit || left <= 0) {
        const why = this.exit ? `qemu exited (${JSON.stringify(this.exit)})` : `${timeoutMs} ms passed`;
        throw new Error(
          `no ${what} from the guest: ${why}\n--- serial:\n${this.serial}\n--- stderr:\n${this.stderr}`,
        );
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Waits for a line matching `re` on the serial console. */
  waitFor(re: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    return this.waitSerial((s) => s.match(re) ?? undefined, timeoutMs, String(re));
  }

  /** Waits until the writer reports at least `n` files. */
  waitFiles(n: number, timeoutMs = 30_000): Promise<number> {
    return this.waitSerial(
      () => (this.files >= n ? this.files : undefined),
      timeoutMs,
      `"writer: ${n} files"`,
    );
  }

  /** Sends a line to the guest's serial console. */
  send(line: string): void {
    this.proc.stdin?.write(`${line}\n`);
  }

  /**
   * Tells the writer to stop and waits for the guest to unmount and power off; resolves with the
   * number of files it wrote. Throws if it did not unmount cleanly or qemu did not exit 0.
   */
  async stopWriter(timeoutMs = 60_000): Promise<number> {
    this.send('stop');
    const m = await this.waitFor(/writer: stopped at [\d.]+s after (\d+) files/, timeoutMs);
    await this.waitFor(/guest: unmounted/, timeoutMs);
    const ex = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (ex?.code !== 0) {
      throw new Error(
        `qemu did not exit 0 after the guest powered off: ${JSON.stringify(ex)}\n${this.stderr}`,
      );
    }
    return Number(m[1]);
  }

  /** Kills qemu (SIGKILL) if it still runs, and closes QMP. */
  async kill(): Promise<void> {
    this.qmp?.close();
    if (!this.exit) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** The qemu command line `bootGuest` runs. */
export function guestArgs(opts: BootOptions, guest: PreparedGuest): string[] {
  return [
    '-name',
    'archip-guest',
    '-nodefaults',
    '-no-user-config',
    '-machine',
    'pc',
    '-accel',
    opts.accel ?? 'tcg',
    '-m',
    String(opts.memoryMiB ?? 128),
    '-smp',
    '1',
    '-display',
    'none',
    '-chardev',
    'stdio,id=serial0,signal=off',
    '-serial',
    'chardev:serial0',
    '-kernel',
    guest.kernel,
    '-initrd',
    guest.initrd,
    '-append',
    guest.cmdline,
    '-blockdev',
    JSON.stringify(nbdBlockdev(opts.diskUri, 'disk0', opts.reconnectDelay)),
    '-device',
    'virtio-blk-pci,drive=disk0,id=vda',
    '-qmp',
    `unix:${opts.qmpSocket},server=on,wait=off`,
    '-no-reboot',
    ...(opts.incoming ? ['-incoming', opts.incoming] : []),
    ...(opts.extra ?? []),
  ];
}

/**
 * Starts qemu on the guest with `diskUri` as its virtio disk, connects QMP. The guest boots and its
 * writer starts (`guest.waitFor(/writer: started/)`), unless `incoming`: then qemu waits for a
 * migration (`source.qmp.migrate(incoming)`).
 */
export async function bootGuest(opts: BootOptions): Promise<Guest> {
  const guest = opts.guest ?? (await prepareGuest());
  await rm(opts.qmpSocket, { force: true });
  const start = opts.spawn ?? ((cmd, args, o) => spawn(cmd, args, o));
  // qemu dies with the test process (SIGKILL as parent-death signal): no guest left running.
  const [cmd, args] = existsSync(SETPRIV)
    ? [SETPRIV, ['--pdeathsig', 'KILL', '--', QEMU, ...guestArgs(opts, guest)]]
    : [QEMU, guestArgs(opts, guest)];
  const proc = start(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const g = new Guest(proc);
  try {
    g.qmp = await Promise.race([
      QmpClient.connect(opts.qmpSocket, 15_000),
      g.exited.then((ex) => {
        throw new Error(`qemu exited (${JSON.stringify(ex)}) before QMP was up`);
      }),
      new Promise<never>((_, reject) => proc.once('error', reject)),
    ]);
  } catch (e) {
    if (!g.exitStatus) proc.kill('SIGKILL');
    await sleep(100);
    throw new Error(`${(e as Error).message}: ${g.stderr}`);
  }
  return g;
}

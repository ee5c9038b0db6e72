#!/usr/bin/env node
/**
 * A qemu guest's disk I/O through our vhost-user-blk endpoint, side by side in one run with
 * qemu-storage-daemon's vhost-user-blk export of a raw file and with our NBD endpoint (qemu's nbd
 * driver + virtio-blk-pci): same guest, same jobs, same data. Not a test: run it by hand.
 *
 *   node bench/vhost/run.mjs [--size-mib 256] [--seconds 5] [--accel kvm|tcg] [--dir /var/tmp] [--keep]
 *
 * The guest is test-e2e/lib/guest.ts's kernel and busybox initramfs (run test-e2e/guest or
 * test-e2e/vhost once to build it into /var/tmp/archip-guest/), with a second cpio archive on top
 * (the kernel unpacks both; later files win): an /init that runs iogen.c (a small static fio
 * stand-in: QD threads of O_DIRECT pread/pwrite, in a 256 MiB guest; fio with its ~84 MiB of shared
 * libraries needs 384 MiB: test-e2e/vhost/fio-verify.test.ts runs it so, for its verify job)
 * on /dev/vda for each job and powers off. Jobs: 4 KiB random read and write at QD32 and QD1,
 * 1 MiB sequential read and write at QD1.
 *
 * Targets, in this order, each with its own boot of the same guest:
 *   qsd        qemu-storage-daemon --export type=vhost-user-blk on a raw file (file driver, page cache)
 *   vhost      vlmc map VOL --vhost-user SOCK (file blockers, the composer)
 *   nbd        the same map's NBD socket, qemu -blockdev nbd + virtio-blk-pci
 * The volume is an import of the raw file's random bytes (reads of holes would measure nothing).
 *
 * Writes bench/results/vhost.md (ratios vhost/qsd and vhost/nbd, with `uptime` before and after:
 * the machine is shared).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { exec } from '../../scripts/lib/proc.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(dirname(HERE));
const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');
const GUEST_CACHE = '/var/tmp/archip-guest';

const { values: opts } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '256' },
    seconds: { type: 'string', default: '5' },
    accel: { type: 'string', default: 'tcg' },
    dir: { type: 'string', default: '/var/tmp' },
    targets: { type: 'string', default: 'qsd,vhost,nbd' },
    keep: { type: 'boolean', default: false },
  },
});
const sizeMiB = Number(opts['size-mib']);
const seconds = Number(opts.seconds);

const JOBS = [
  { id: 'randread-qd32', mode: 'randread', bs: 4096, qd: 32, label: '4 KiB random read, QD32' },
  { id: 'randwrite-qd32', mode: 'randwrite', bs: 4096, qd: 32, label: '4 KiB random write, QD32' },
  { id: 'randread-qd1', mode: 'randread', bs: 4096, qd: 1, label: '4 KiB random read, QD1' },
  { id: 'randwrite-qd1', mode: 'randwrite', bs: 4096, qd: 1, label: '4 KiB random write, QD1' },
  { id: 'read-1m-qd1', mode: 'read', bs: 1048576, qd: 1, label: '1 MiB sequential read, QD1' },
  { id: 'write-1m-qd1', mode: 'write', bs: 1048576, qd: 1, label: '1 MiB sequential write, QD1' },
];

const sh = (cmd, args, env) => execFileSync(cmd, args, { encoding: 'utf8', env: env ?? process.env }).trim();

/** The newest prepared test guest. */
function guestDir() {
  const dirs = existsSync(GUEST_CACHE)
    ? readdirSync(GUEST_CACHE)
        // The base guest (its inputs.json names the modules), not a script guest built over it.
        .filter(
          (d) =>
            !d.includes('.tmp') &&
            existsSync(join(GUEST_CACHE, d, 'initramfs.cpio')) &&
            existsSync(join(GUEST_CACHE, d, 'inputs.json')),
        )
        .map((d) => join(GUEST_CACHE, d))
    : [];
  dirs.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!dirs[0])
    throw new Error(`no prepared guest in ${GUEST_CACHE}: run "pnpm exec vitest run test-e2e/vhost" once`);
  return dirs[0];
}

/** The guest's initramfs plus a second archive with the bench's /init and iogen. */
async function benchInitrd(dir, guest) {
  const stage = join(dir, 'stage');
  await mkdir(join(stage, 'bin'), { recursive: true });
  sh('gcc', ['-O2', '-static', '-pthread', '-o', join(stage, 'bin/iogen'), join(HERE, 'iogen.c')]);
  const inputs = JSON.parse(await readFile(join(guest, 'inputs.json'), 'utf8'));
  const mods = inputs.modules.map((m) => m.name).join(' ');
  const jobs = JOBS.map(
    (j) => `/bin/iogen /dev/vda ${j.mode} ${j.bs} ${j.qd} ${seconds} ${sizeMiB} ${j.id}`,
  ).join('\n');
  const init = `#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${mods}; do insmod /lib/modules/$m.ko; done
i=0; while [ ! -b /dev/vda ]; do i=$((i+1)); [ $i -gt 300 ] && break; usleep 100000; done
echo mq-deadline > /sys/block/vda/queue/scheduler 2>/dev/null
echo "bench: start $(cat /sys/block/vda/mq/*/nr_tags 2>/dev/null | head -1)"
${jobs}
echo "bench: done"
poweroff -f
sleep 10
`;
  await writeFile(join(stage, 'init'), init, { mode: 0o755 });
  const extra = join(dir, 'extra.cpio');
  execFileSync('sh', ['-c', `cd ${stage} && find . | cpio -o -H newc --quiet > ${extra}`]);
  const out = join(dir, 'initrd.cpio');
  await writeFile(out, Buffer.concat([await readFile(join(guest, 'initramfs.cpio')), await readFile(extra)]));
  return out;
}

/** Boots the bench guest with `disk` (qemu args), collects its RESULT lines. */
async function runGuest(guest, initrd, disk, tag) {
  const args = [
    '-nodefaults',
    '-no-user-config',
    '-machine',
    'pc,memory-backend=mem',
    '-accel',
    opts.accel,
    '-object',
    'memory-backend-memfd,id=mem,size=256M,share=on',
    '-m',
    '256',
    '-smp',
    '2',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-kernel',
    join(guest, 'vmlinuz'),
    '-initrd',
    initrd,
    '-append',
    'console=ttyS0 quiet panic=-1 8250.nr_uarts=1',
    '-no-reboot',
    ...disk,
  ];
  const ms = (JOBS.length * seconds + 120) * 1000;
  const {
    code,
    stdout: out,
    stderr: err,
  } = await exec('qemu-system-x86_64', args, { timeout: ms, killSignal: 'SIGKILL' });
  if (!out.includes('bench: done'))
    throw new Error(`${tag}: the guest did not finish (${code}): ${err}\n${out}`);
  const res = {};
  for (const m of out.matchAll(/RESULT (\S+) (\d+) (\d+) ([\d.]+) ([\d.]+)/g)) {
    res[m[1]] = { ops: Number(m[2]), bytes: Number(m[3]), secs: Number(m[4]), latUs: Number(m[5]) };
  }
  return res;
}

async function waitSocket(path) {
  for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 50));
}

async function main() {
  const guest = guestDir();
  const dir = await mkdtemp(join(opts.dir, 'archip-bench-vhost-'));
  const conf = join(dir, 'archipelago.conf');
  await writeFile(
    conf,
    `[ARCHIPELAGO]\nUSER = root\nGROUP = root\n[XSEG]\n[PEERS]\n[blockerb]\ntype = file_blocker\narchip_dir = ${dir}/blocks\n[blockerm]\ntype = file_blocker\narchip_dir = ${dir}/maps\n[mapperd]\nlock_timeout = 5\n[vlmcd]\n`,
  );
  const env = { ...process.env, ARCHIPELAGO_CONF: conf };
  const vlmc = (...a) => sh(process.execPath, [VLMC, ...a], env);
  const uptimeBefore = sh('uptime', []);
  try {
    const initrd = await benchInitrd(dir, guest);
    const raw = join(dir, 'disk.raw');
    const chunk = randomBytes(1 << 20);
    await writeFile(raw, Buffer.concat(Array.from({ length: sizeMiB }, () => chunk)));
    vlmc('import', raw, 'bench');
    const results = {};
    for (const target of opts.targets.split(',')) {
      const sock = join(dir, `${target}.sock`);
      let stop = async () => {};
      let disk;
      if (target === 'qsd') {
        const qraw = join(dir, 'qsd.raw');
        await copyFile(raw, qraw);
        const qsd = spawn(
          'qemu-storage-daemon',
          [
            '--blockdev',
            `driver=file,node-name=file0,filename=${qraw},cache.direct=off,aio=threads`,
            '--blockdev',
            'driver=raw,node-name=disk0,file=file0',
            '--export',
            `type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=${sock},writable=on`,
          ],
          { stdio: 'inherit' },
        );
        stop = async () => {
          qsd.kill('SIGTERM');
          await new Promise((r) => qsd.once('exit', r));
        };
        await waitSocket(sock);
      } else {
        const uri = vlmc('map', 'bench', ...(target === 'vhost' ? ['--vhost-user', sock] : []));
        stop = async () => vlmc('unmap', 'bench');
        if (target === 'nbd') {
          const blockdev = {
            driver: 'nbd',
            'node-name': 'nbd0',
            server: { type: 'unix', path: uri.split('socket=')[1] },
            export: 'bench',
          };
          disk = ['-blockdev', JSON.stringify(blockdev), '-device', 'virtio-blk-pci,drive=nbd0,num-queues=1'];
        }
      }
      disk ??= [
        '-chardev',
        `socket,id=c0,path=${sock}`,
        '-device',
        'vhost-user-blk-pci,chardev=c0,num-queues=1',
      ];
      try {
        console.log(`${target}: running ${JOBS.length} jobs of ${seconds} s`);
        results[target] = await runGuest(guest, initrd, disk, target);
        for (const j of JOBS) {
          const r = results[target][j.id];
          if (r)
            console.log(
              `  ${j.label}: ${(r.ops / r.secs).toFixed(0)} IOPS, ${(r.bytes / r.secs / 1048576).toFixed(1)} MiB/s, ${r.latUs.toFixed(0)} us`,
            );
        }
      } finally {
        await stop();
      }
    }
    const uptimeAfter = sh('uptime', []);
    const rate = (t, j) => (results[t]?.[j.id] ? results[t][j.id].ops / results[t][j.id].secs : Number.NaN);
    const lines = [
      '# vhost-user-blk: guest I/O through our endpoint vs qemu-storage-daemon and our NBD path',
      '',
      `Run ${new Date().toISOString()}, ${os.cpus().length} CPUs, qemu accel ${opts.accel}, guest kernel ${JSON.parse(await readFile(join(guest, 'inputs.json'), 'utf8')).version}, ${sh('qemu-system-x86_64', ['--version']).split('\n')[0]}.`,
      `${sizeMiB} MiB disk, ${seconds} s per job, iogen (bench/vhost/iogen.c) in the guest, O_DIRECT.`,
      `uptime before: ${uptimeBefore}`,
      `uptime after: ${uptimeAfter}`,
      '',
      '| job | qsd IOPS | vhost IOPS | nbd IOPS | vhost/qsd | vhost/nbd |',
      '|---|---:|---:|---:|---:|---:|',
      ...JOBS.map((j) => {
        const [q, v, n] = ['qsd', 'vhost', 'nbd'].map((t) => rate(t, j));
        return `| ${j.label} | ${q.toFixed(0)} | ${v.toFixed(0)} | ${n.toFixed(0)} | ${(v / q).toFixed(2)} | ${(v / n).toFixed(2)} |`;
      }),
      '',
    ];
    await mkdir(join(ROOT, 'bench/results'), { recursive: true });
    await writeFile(join(ROOT, 'bench/results/vhost.md'), lines.join('\n'));
    console.log(lines.join('\n'));
  } finally {
    if (!opts.keep) await rm(dir, { recursive: true, force: true });
  }
}

await main();

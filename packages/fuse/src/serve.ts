/**
 * The whole life of a served file: mount, serve, unmount.
 */
import { type FuseMountOptions, mountFuseFile, prepareMountpoint, unmountFuse } from './mount.js';
import { type FuseFileBackend, FuseFileServer, type FuseServerOptions } from './server.js';

export interface ServedFile {
  /** The absolute path of the file. */
  readonly path: string;
  readonly server: FuseFileServer;
  /**
   * Unmounts the file and waits for the requests being served. A file still in use (open by a
   * process, backing a loop device) is detached lazily: its users' I/O fails from then on.
   * Returns false when it had to be lazy.
   */
  close(): Promise<boolean>;
}

/**
 * Serves `backend` as the regular file `path` (created when missing; see `prepareMountpoint`),
 * mounted read-only when the backend is.
 */
export async function serveFuseFile(
  path: string,
  backend: FuseFileBackend,
  opts: FuseServerOptions & Omit<FuseMountOptions, 'readonly'> = {},
): Promise<ServedFile> {
  const abs = await prepareMountpoint(path);
  const mount = await mountFuseFile(abs, {
    readonly: backend.readonly,
    ...(opts.source !== undefined ? { source: opts.source } : {}),
    ...(opts.allowOther !== undefined ? { allowOther: opts.allowOther } : {}),
  });
  const server = new FuseFileServer(mount.channel, backend, opts);
  server.start();
  let closing: Promise<boolean> | null = null;
  return {
    path: abs,
    server,
    close: () => {
      closing ??= (async () => {
        let clean = true;
        try {
          await unmountFuse(abs);
        } catch {
          clean = false;
          await unmountFuse(abs, { lazy: true });
        }
        // Unmounted: the blocked reads return ENODEV; a lazy unmount ends at the last close,
        // so only wait for what is being served, then close the descriptor (aborting the rest).
        if (clean) await Promise.race([server.closed, new Promise((r) => setTimeout(r, 5000).unref())]);
        else await server.drain();
        mount.channel.close();
        return clean;
      })();
      return closing;
    },
  };
}

/** The account resource: `GET`/`HEAD /<account>`, its containers and what they hold. */
import type { Handler, Target } from './context.js';
import { sendListing } from './listing.js';

/** `HEAD /<a>`: 204 with the counts; `GET /<a>`: the container listing (`name, count, bytes`). */
export const showAccount: Handler<Target> = async (ctx, req, res, t) => {
  const containers = await ctx.store.listContainers(t.account);
  const stats = await Promise.all(
    containers.map(async (c) => {
      const objs = await ctx.store.listObjects(t.account, c.container);
      return { name: c.container, count: objs.length, bytes: objs.reduce((s, o) => s + o.bytes, 0) };
    }),
  );
  const headers = {
    'X-Account-Container-Count': String(stats.length),
    'X-Account-Object-Count': String(stats.reduce((s, c) => s + c.count, 0)),
    'X-Account-Bytes-Used': String(stats.reduce((s, c) => s + c.bytes, 0)),
    'X-Timestamp': (Date.now() / 1000).toFixed(5),
  };
  if (req.method === 'HEAD') {
    res.writeHead(204, headers);
    res.end();
    return;
  }
  sendListing(
    req,
    res,
    t.query,
    headers,
    stats,
    (s) => s.name,
    (s) => s,
  );
};

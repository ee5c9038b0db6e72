/**
 * Entry of the endpoint process behind `vlmc map`: `node main.js` with the request as JSON in
 * ARCHIPELAGO_ENDPOINT. A failure to start is reported on stdout (`ERROR <json>`), then it exits.
 */
import { describeError } from '@archipelago/libxseg';
import { reportStartFailure } from '../spawn.js';
import { ENDPOINT_ENV, type HostRequest, runHost } from './host.js';

const text = process.env[ENDPOINT_ENV];
if (text === undefined || text === '') {
  process.stderr.write(`endpoint: pass the request as JSON in ${ENDPOINT_ENV}\n`);
  process.exit(2);
}
runHost(JSON.parse(text) as HostRequest).catch((e: unknown) => {
  reportStartFailure(describeError(e));
  process.exit(1);
});

// Runs the archipelago oclif tool with the command line taken as the original took it
// (normalizeArgv of @archipelago/cli-kit). `dir` is the package's root: bin/ has a package.json
// of its own (CommonJS), which oclif must not take for the tool's.
const { join } = require('node:path');

exports.run = async (argv) => {
  const [{ execute }, { normalizeArgv }] = await Promise.all([
    import('@oclif/core'),
    import('@archipelago/cli-kit'),
  ]);
  await execute({ args: normalizeArgv(argv), dir: join(__dirname, '..') });
};

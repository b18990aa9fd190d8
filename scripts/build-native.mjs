// Builds the optional OpenBLAS addon (workers/native). Without OpenBLAS the install still
// succeeds and spngd uses the gpu.js backend, so a failed build is reported, never fatal.
// node-gyp runs quietly: the install prints one line saying which backend was built, or why not
// (SPNGD_BUILD_VERBOSE=1 shows node-gyp's whole output).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'workers', 'native');
if (!existsSync(join(dir, 'binding.gyp'))) process.exit(0);

const verbose = process.env.SPNGD_BUILD_VERBOSE === '1';
const gyp = join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const cmd = existsSync(gyp) ? [process.execPath, gyp] : ['npx', 'node-gyp'];
// node-gyp would download Node's headers; use the ones installed with Node when present (offline hosts).
const prefix = join(dirname(process.execPath), '..');
const nodedir = existsSync(join(prefix, 'include', 'node', 'common.gypi')) ? [`--nodedir=${prefix}`] : [];
const args = [...cmd.slice(1), 'rebuild', '--directory', dir, ...nodedir, ...(verbose ? [] : ['--loglevel=silent'])];
const res = spawnSync(cmd[0], args, { stdio: verbose ? 'inherit' : 'pipe', encoding: 'utf8' });
const addon = join(dir, 'build', 'Release', 'spngd_blas.node');
if (res.status === 0 && existsSync(addon)) {
  console.log(`spngd: built the OpenBLAS addon (${relative(root, addon)}): the blas backend is available.`);
} else {
  const output = `${res.stdout ?? ''}\n${res.stderr ?? ''}`;
  const why =
    res.error?.message ??
    output
      .split('\n')
      .map((l) => l.trim())
      .find((l) => /fatal error|error:|cannot find|not found/i.test(l)) ??
    `node-gyp exited with status ${res.status}`;
  console.warn(
    `spngd: the OpenBLAS addon did not build (${why}); is libopenblas-dev installed? The gpu backend will be used (SPNGD_BUILD_VERBOSE=1 node scripts/build-native.mjs shows the build).`,
  );
}

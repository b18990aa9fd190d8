// Builds the optional OpenBLAS addon (workers/native). Without OpenBLAS the install still
// succeeds and spngd uses the gpu.js backend, so a failed build is reported, never fatal.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'workers', 'native');
if (!existsSync(join(dir, 'binding.gyp'))) process.exit(0);

const gyp = join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const cmd = existsSync(gyp) ? [process.execPath, gyp] : ['npx', 'node-gyp'];
// node-gyp would download Node's headers; use the ones installed with Node when present (offline hosts).
const prefix = join(dirname(process.execPath), '..');
const nodedir = existsSync(join(prefix, 'include', 'node', 'common.gypi')) ? [`--nodedir=${prefix}`] : [];
const res = spawnSync(cmd[0], [...cmd.slice(1), 'rebuild', '--directory', dir, ...nodedir], { stdio: 'inherit' });
if (res.status !== 0) {
  console.warn('spngd: the OpenBLAS addon did not build (is libopenblas-dev installed?); the gpu backend will be used.');
}

// A file written whole or not at all: readers (an operator, node_exporter's textfile
// collector) never see half of it, and a crash leaves the old one.
import fs from 'node:fs';
import path from 'node:path';
import { atomicTmpName } from '../store/names.js';

/** Writes data to a temporary name in file's folder, fsyncs it, renames it over file, fsyncs the folder. */
export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): void {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, atomicTmpName(path.basename(file), process.pid));
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, mode);
  try {
    try {
      fs.writeFileSync(fd, data);
      fs.fchmodSync(fd, mode); // not narrowed by the umask
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  const dfd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

// Apply: the only code that changes a vserver. Every link is guarded by a fresh stat,
// a live metadata and extended-attribute check, and a byte-for-byte comparison; it is
// made as a temporary link in the server's folder and renamed over the file, so the
// path never disappears. Undo writes a private copy the same way.
export { applyLinks } from './apply/link.js';
export { applyUndo, type UndoItem } from './apply/undo.js';
export { KEPT_FLAGS, LINK_CONCURRENCY, flagsOf, setMetadata, type ApplyContext, type Outcome } from './apply/common.js';

// Test-only fault injection: with VUNIFY_FAULT_AFTER=N the process kills itself (SIGKILL,
// no cleanup of any kind) at the Nth change point of apply, so tests can prove that
// `vunify recover` finishes or rolls back whatever was under way. Unset, it costs a compare.
const after = Number(process.env.VUNIFY_FAULT_AFTER ?? 0);
let passed = 0;

export function faultPoint(): void {
  if (after > 0 && ++passed === after) process.kill(process.pid, 'SIGKILL');
}

// vunify's library API; the CLI is a thin layer over it.
export { unify, undo, planRun, serverPath, DEFAULT_DB, DEFAULT_VSERVERS_DIR } from './engine.js';
export type { UnifyOptions } from './engine.js';
export type { CommonOptions } from './model.js';
export type { Report, Counters, FileLine } from './report.js';
export { formatText } from './report.js';
export { plan } from './plan.js';
export { SKIP_REASONS } from './model.js';
export type { Decision, SkipReason, PlanInput } from './model.js';
export { VunifyError, EXIT } from './errors.js';
export { Index, SCHEMA_VERSION } from './store/index-db.js';
export { applyPlan, savePlan } from './apply-plan.js';
export type { ApplyPlanOptions } from './apply-plan.js';
export { readPlan, PLAN_VERSION } from './plan-file.js';
export type { PlanDocument } from './plan-file.js';
export { formatMetrics } from './metrics.js';
export type { RunMetrics } from './metrics.js';

// Types for eventstream.mjs: the same as eventstream.d.ts.
export { EventStreamClient } from "./eventstream.js";
export type { EventStreamClientOptions, EventStreamErrorEvent } from "./eventstream.js";

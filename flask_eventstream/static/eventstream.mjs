// The browser client as an ES module:
//   import { EventStreamClient } from "/events/static/eventstream.mjs";
import "./eventstream.js";

export const EventStreamClient = globalThis.EventStreamClient;
export default EventStreamClient;

// Types for flask-eventstream's browser client (eventstream.js, eventstream.mjs).

export interface EventStreamClientOptions {
  /** "auto" (default): native EventSource where there is one, else long-polling. */
  transport?: "auto" | "eventsource" | "longpoll" | "poll";
  /** Send cookies to another origin (EventSource's withCredentials). */
  withCredentials?: boolean;
  /** One connection per URL for all the tabs of an origin that are the same
   * subscriber, as the server scopes them (Web Locks and BroadcastChannel;
   * each tab connects alone where they are missing). */
  shared?: boolean;
  /** Returns a subscriber token, sent as ?token=; called before connecting
   * and again when the server refuses the token (403). */
  getToken?: () => string | Promise<string>;
}

/** The "error" event: the HTTP status (0: no answer) and the server's reason. */
export interface EventStreamErrorEvent extends Event {
  readonly status?: number;
  readonly message?: string;
}

export declare class EventStreamClient extends EventTarget {
  constructor(url: string | URL, options?: EventStreamClientOptions);
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSED: 2;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSED: 2;
  /** The absolute URL of the stream. */
  readonly url: string;
  readonly withCredentials: boolean;
  /** The transport in use: "eventsource", "longpoll" or "poll". */
  readonly transport: "eventsource" | "longpoll" | "poll";
  /** Whether this tab shares one connection with the other tabs. */
  readonly shared: boolean;
  /** 0 connecting, 1 open, 2 closed for good. */
  readonly readyState: 0 | 1 | 2;
  /** The id of the last event received: where a reconnection resumes. */
  readonly lastEventId: string;
  onopen: ((this: EventStreamClient, event: Event) => unknown) | null;
  onmessage: ((this: EventStreamClient, event: MessageEvent<string>) => unknown) | null;
  onerror: ((this: EventStreamClient, event: EventStreamErrorEvent) => unknown) | null;
  addEventListener(
    type: string,
    listener: (this: EventStreamClient, event: MessageEvent<string>) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Stop: this tab's connection (or its share of one) ends for good. */
  close(): void;
}

declare global {
  interface Window {
    EventStreamClient: typeof EventStreamClient;
  }
}

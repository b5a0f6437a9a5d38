/** shared/events/: job control-plane events and the EventBus contract (in-process here; NATS in shared/nats). */
export {
  checkEvent,
  type EventBus,
  InProcessBus,
  JobEvent,
  jobEventSubject,
  JobEventType,
  jobFromToken,
  subjectToken,
  type SubscribeOptions,
  type Unsubscribe,
} from './bus.js';

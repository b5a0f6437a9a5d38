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

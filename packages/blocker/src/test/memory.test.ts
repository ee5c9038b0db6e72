import { FaultyBlocker } from '../faulty.js';
import { blockerConformance, MemoryBlocker, MemoryStore } from './index.js';

const store = new MemoryStore();
blockerConformance({ name: 'memory', factory: async (o) => new MemoryBlocker({ store, ...o }) });

const wrapped = new MemoryStore();
blockerConformance({
  name: 'faulty(memory) with no fault armed',
  factory: async (o) => new FaultyBlocker(new MemoryBlocker({ store: wrapped, ...o })),
});

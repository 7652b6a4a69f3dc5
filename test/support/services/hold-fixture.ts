/**
 * Test fixture: sets the services up as the test run would, prints READY with the private
 * root, and waits to be killed (the watchdog test SIGKILLs it, as a crashed run would die).
 */
import { setupServices } from '../services.ts';

const services = await setupServices(process.env);
process.stdout.write(`READY ${JSON.stringify({ dir: services.dir, env: services.env })}\n`);
setInterval(() => undefined, 60_000);

/** The `concord` command line: see program.ts for its commands and flags. */
import { buildProgram } from './program.ts';

await buildProgram().parseAsync(process.argv);

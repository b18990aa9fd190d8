/** Process entry of the spngd command (bin/spngd.js runs the compiled copy). */
import { main } from './main.js';

await main(process.argv);

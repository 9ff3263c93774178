/**
 * zod as every schema of the service uses it: its small build (zod/mini: a third of the classic
 * API's size in each function's bundle, the same parser and issues), with the English messages the
 * classic API sets by itself. Each schema module imports `* as z from 'zod/mini'` (a namespace
 * import esbuild trims to what is used; re-exported from here, it would bundle all of zod) and
 * this module for its effect.
 */
import { en } from 'zod/locales';
import { config } from 'zod/mini';

config(en());

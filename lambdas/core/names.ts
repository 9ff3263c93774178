/**
 * Lock names: 1-256 characters of A-Z a-z 0-9 . _ - : /, '/' separating levels, no empty, '.' or
 * '..' level, and no action word (acquire, release, renew, cancel, force-release, waits) as the last
 * level. The rule itself is in sdk/names.ts: the SDK checks names before sending them with the
 * very same functions, and the SDK is published from sdk/ alone. So is the rule for client and
 * request ids (IDENTIFIER).
 */
export {
  IDENTIFIER,
  IDENTIFIER_CHARACTERS,
  IDENTIFIER_MAX_LENGTH,
  LOCK_NAME_CHARACTERS,
  LOCK_NAME_MAX_LENGTH,
  lockNameProblem,
  lockNameRefusal,
  lockNameSyntaxProblem,
  lockPrefixProblem,
  lockPrefixRefusal,
  type NameRefusal,
  RESERVED_LAST_LEVELS,
} from '../../sdk/names';

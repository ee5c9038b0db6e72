/** The tools' shared `command_not_found` hook (see @archipelago/cli-kit). */
export { default } from '@archipelago/cli-kit/hooks/command-not-found';

// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_COMMAND_LEVEL_H_
#define SESSIOND_STORAGE_COMMAND_LEVEL_H_

#include <cstdint>
#include <optional>

#include "replication/core/types.h"
#include "sessiond/v1/command.pb.h"

namespace sessiond::storage {

// The commands a binary applies, as a level: each command kind that an
// older binary would apply differently (as a command without an operation,
// while the others change their state) raises it. Every member publishes
// its level into the member table (MemberCommand PUBLISH), and a leader
// proposes such a command only once every member of the configuration
// published a level that has it: during a rolling upgrade, a member still
// on the older binary would otherwise diverge from the rest, for good.
//   1  every command up to ClockCatchUpCommand (a member that published
//      no level counts as 0: not known to have any)
//   2  ClockCatchUpCommand
//   3  ClockCatchUpCommand.move_windows
//   4  RestoreRevocationCommand.give_back_to_applied_time; Command.min_level
//      is checked: an entry of a higher level stops this binary
// A command that needs a level above 1 says so in Command.min_level, so a
// binary of level 4 or later that meets it below its level (rolled back, or
// a learner replaying a log written before it joined) stops instead of
// applying it otherwise.
inline constexpr uint32_t kCommandLevel = 4;
inline constexpr uint32_t kClockCatchUpLevel = 2;
inline constexpr uint32_t kCatchUpMovesWindowsLevel = 3;
inline constexpr uint32_t kRestoreGivesBackAppliedTimeLevel = 4;

// Whether every member of `conf` published `level` or more (false for an
// empty configuration): a leader may then propose commands of that level.
bool EveryMemberApplies(const sessiond::v1::internal::ClusterState& cluster,
                        const replication::ConfState& conf, uint32_t level);

// The member of `conf` (voters and learners) with the lowest level
// published in `cluster`'s member table, with that level (0 for a member
// not in the table, or one that published none); nullopt for an empty
// configuration.
struct LowestCommandLevel {
  NodeId node;
  uint32_t level = 0;
};
std::optional<LowestCommandLevel> LowestPublishedLevel(
    const sessiond::v1::internal::ClusterState& cluster,
    const replication::ConfState& conf);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_COMMAND_LEVEL_H_

// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/lincheck/search.h"

#include <algorithm>

namespace sessiond::lincheck::internal {

EventList::EventList(std::span<const Interval> intervals) {
  struct Event {
    int64_t time;
    bool is_call;
    size_t op;
  };
  std::vector<Event> order;
  order.reserve(2 * intervals.size());
  for (size_t op = 0; op < intervals.size(); ++op) {
    order.push_back({intervals[op].call_ns, true, op});
    order.push_back({intervals[op].return_ns, false, op});
  }
  // Calls before returns at equal times: touching intervals are concurrent
  // (see the file comment in search.h). Ties otherwise go by index so the
  // search, and so its explanation, is the same on every run.
  std::sort(order.begin(), order.end(), [](const Event& a, const Event& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.is_call != b.is_call) return a.is_call;
    return a.op < b.op;
  });

  nodes_.resize(order.size() + 2);
  std::vector<int> call_event(intervals.size(), -1);
  int prev = kHead;
  for (size_t i = 0; i < order.size(); ++i) {
    const int event = static_cast<int>(i) + 2;
    Node& node = nodes_[event];
    node.op = order[i].op;
    node.is_call = order[i].is_call;
    node.prev = prev;
    nodes_[prev].next = event;
    prev = event;
    if (node.is_call) {
      call_event[node.op] = event;
    } else {
      nodes_[call_event[node.op]].return_event = event;
    }
  }
  nodes_[prev].next = kTail;
  nodes_[kTail].prev = prev;
}

void EventList::Lift(int call) {
  Unlink(call);
  Unlink(nodes_[call].return_event);
}

void EventList::Unlift(int call) {
  Relink(nodes_[call].return_event);
  Relink(call);
}

void EventList::Unlink(int event) {
  const Node& node = nodes_[event];
  nodes_[node.prev].next = node.next;
  nodes_[node.next].prev = node.prev;
}

void EventList::Relink(int event) {
  const Node& node = nodes_[event];
  nodes_[node.prev].next = event;
  nodes_[node.next].prev = event;
}

}  // namespace sessiond::lincheck::internal

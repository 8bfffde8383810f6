//! What happens to tasks and workers during the day: each action emits the callbacks
//! TaskRouter would send and records the ground truth from the same values.

use super::engine::*;
use super::*;
use rand::Rng;
use serde_json::json;
use std::cmp::Reverse;

impl Sim {
    pub(super) fn emit(
        &mut self,
        ts: i64,
        etype: &str,
        desc: String,
        res: (&str, String),
        extra: Callback,
    ) {
        let ev = new_sid(&mut self.rng, "EV");
        let mut cb = vec![
            kv("EventType", etype),
            kv("AccountSid", &self.account),
            kv("WorkspaceSid", &self.workspace),
            kv("WorkspaceName", WORKSPACE_NAME),
            kv("EventDescription", desc),
            kv("ResourceType", res.0),
            kv("ResourceSid", res.1),
            kv("Timestamp", ts.div_euclid(1000)),
            kv("TimestampMs", ts),
            kv("Sid", ev),
        ];
        cb.extend(extra);
        self.out.push((ts, cb));
    }

    pub(super) fn age(&self, t: usize, ts: i64) -> i64 {
        (ts - self.tasks[t].truth.created_ms).div_euclid(1000)
    }

    pub(super) fn task_params(&self, t: usize, ts: i64) -> Callback {
        let task = &self.tasks[t];
        vec![
            kv("TaskSid", &task.truth.sid),
            kv("TaskAttributes", task.attrs.to_string()),
            kv("TaskAge", self.age(t, ts)),
            kv("TaskPriority", task.priority),
            kv("TaskAssignmentStatus", task.status),
            kv("TaskDateCreated", task.truth.created_ms.div_euclid(1000)),
            kv("TaskChannelSid", &self.channel_sids[task.channel]),
            kv("TaskChannelUniqueName", CHANNELS[task.channel]),
            kv("TaskQueueSid", &task.truth.queue_sid),
            kv("TaskQueueName", &task.truth.queue_name),
            kv(
                "TaskQueueTargetExpression",
                format!("skills HAS '{}'", QUEUES[task.queue].1),
            ),
            kv("WorkflowSid", &self.workflow_sid),
            kv("WorkflowName", WORKFLOW_NAME),
            kv("TaskVersion", task.version),
        ]
    }

    /// Emits a task-group event whose resource (task, queue or workflow) follows from `etype`.
    pub(super) fn emit_task(
        &mut self,
        t: usize,
        ts: i64,
        etype: &str,
        desc: String,
        more: Callback,
    ) {
        let mut extra = self.task_params(t, ts);
        extra.extend(more);
        let res = match etype.split('.').next() {
            Some("task-queue") => ("taskqueue", self.tasks[t].truth.queue_sid.clone()),
            Some("workflow") => ("workflow", self.workflow_sid.clone()),
            _ => ("task", self.tasks[t].truth.sid.clone()),
        };
        self.emit(ts, etype, desc, res, extra);
    }

    pub(super) fn worker_attrs(&self, w: usize) -> String {
        let k = &self.workers[w];
        let mut v = json!({
            "contact_uri": format!("client:{}", k.name),
            "full_name": k.full_name,
            "routing": {"skills": k.skills},
        });
        if !k.languages.is_empty() {
            if let Value::Object(m) = &mut v {
                m.insert("languages".to_string(), json!(k.languages));
            }
        }
        v.to_string()
    }

    pub(super) fn worker_params(&self, w: usize) -> Callback {
        let k = &self.workers[w];
        vec![
            kv("WorkerSid", &k.sid),
            kv("WorkerName", &k.name),
            kv("WorkerAttributes", self.worker_attrs(w)),
            kv("WorkerActivitySid", &self.activity_sids[k.activity]),
            kv("WorkerActivityName", ACTIVITIES[k.activity].0),
            kv("WorkerVersion", k.version),
        ]
    }

    pub(super) fn emit_worker(
        &mut self,
        w: usize,
        ts: i64,
        etype: &str,
        desc: String,
        more: Callback,
    ) {
        let mut extra = self.worker_params(w);
        extra.extend(more);
        let sid = self.workers[w].sid.clone();
        self.emit(ts, etype, desc, ("worker", sid), extra);
    }

    pub(super) fn emit_res(&mut self, t: usize, r: usize, ts: i64, verb: &str) {
        let w = self.tasks[t].res[r].worker;
        let mut extra = self.task_params(t, ts);
        extra.extend(self.worker_params(w));
        let res = &self.tasks[t].res[r];
        let rsid = res.sid.clone();
        extra.push(kv("ReservationSid", &rsid));
        extra.push(kv("ReservationVersion", res.version));
        let desc = format!("Reservation {rsid} {verb} ({})", self.workers[w].name);
        let etype = format!("reservation.{verb}");
        self.emit(ts, &etype, desc, ("reservation", rsid), extra);
    }

    pub(super) fn channel_params(&self, w: usize, ch: usize, prev_capacity: i64) -> Callback {
        let c = &self.workers[w].chans[ch];
        vec![
            kv("TaskChannelSid", &self.channel_sids[ch]),
            kv("TaskChannelUniqueName", CHANNELS[ch]),
            kv("WorkerChannelAvailable", c.available),
            kv("WorkerChannelCapacity", c.capacity),
            kv("WorkerChannelPreviousCapacity", prev_capacity),
            kv("WorkerChannelAvailableCapacity", c.capacity - c.count),
            kv("WorkerChannelTaskCount", c.count),
        ]
    }

    // ----- tasks ----------------------------------------------------------

    pub(super) fn task_arrive(&mut self, t: usize) {
        // The first tick below (task.created) happens at exactly `created`.
        let created = self.clock + 1;
        self.tasks[t].truth.created_ms = created;
        let (sid, qname) = (&self.tasks[t].truth.sid, &self.tasks[t].truth.queue_name);
        let descs = [
            format!("Task {sid} created"),
            format!("Task {sid} entered TaskQueue {qname}"),
            format!("Task {sid} matched a target of Workflow {WORKFLOW_NAME}"),
        ];
        let types = [
            "task.created",
            "task-queue.entered",
            "workflow.target-matched",
        ];
        for (etype, desc) in types.into_iter().zip(descs) {
            let ts = self.tick();
            self.emit_task(t, ts, etype, desc, vec![]);
        }
        let routable = self.clock + self.r(300, 1_500);
        self.tasks[t].routable_at = routable;
        self.at(routable, Action::Dispatch);
        if let Some((after, _)) = self.tasks[t].abandon {
            self.at(created + after, Action::TaskAbandon(t));
        }
        if let Some(after) = self.tasks[t].update_after {
            self.at(created + after, Action::TaskUpdate(t));
        }
        self.pending.push(t);
    }

    pub(super) fn task_update(&mut self, t: usize) {
        let case = self.rng.gen_range(10_000..100_000);
        let task = &mut self.tasks[t];
        let what = match task.status {
            "pending" | "reserved" if task.priority == 0 => {
                task.priority = 10;
                "priority"
            }
            "pending" | "reserved" | "assigned" => {
                if let Value::Object(m) = &mut task.attrs {
                    m.insert("crm_case".to_string(), json!(format!("CS-{case}")));
                }
                "attributes"
            }
            _ => return,
        };
        task.version += 1;
        task.truth.updates += 1;
        let desc = format!("Task {} {what} updated", task.truth.sid);
        let ts = self.tick();
        self.emit_task(t, ts, "task.updated", desc, vec![]);
    }

    pub(super) fn task_abandon(&mut self, t: usize) {
        let was = self.tasks[t].status;
        if was != "pending" && was != "reserved" {
            return;
        }
        self.tasks[t].status = "canceled";
        self.tasks[t].version += 1;
        if let Some(r) = self.tasks[t].current.take() {
            let ts = self.tick();
            self.tasks[t].res[r].version += 1;
            let (w, ch) = (self.tasks[t].res[r].worker, self.tasks[t].channel);
            self.workers[w].chans[ch].count -= 1;
            self.emit_res(t, r, ts, "canceled");
        }
        let ts = self.tick();
        let age = self.age(t, ts);
        let task = &mut self.tasks[t];
        task.truth.total_time = Some(age);
        task.truth.canceled_wait_s = Some(age);
        let more = vec![kv("TaskCanceledReason", CANCEL_REASONS[task.channel])];
        let desc = format!("Task {} canceled", task.truth.sid);
        self.emit_task(t, ts, "task.canceled", desc, more);
        self.pending.retain(|&x| x != t);
    }

    pub(super) fn dispatch(&mut self) {
        let now = self.clock;
        let mut cands: Vec<usize> = self
            .pending
            .iter()
            .copied()
            .filter(|&t| {
                let k = &self.tasks[t];
                let offered_enough = k.abandon.is_some_and(|(_, max)| k.res.len() >= max);
                k.status == "pending" && k.routable_at <= now && !offered_enough
            })
            .collect();
        // Priority first, then age (task indices follow creation order).
        cands.sort_by_key(|&t| (Reverse(self.tasks[t].priority), t));
        // A reservation only takes capacity, so a (channel, queue) with no eligible worker
        // stays without one for the rest of this round: its other tasks are skipped
        // rather than each scanning every worker (quadratic on an overloaded day).
        let mut full: Vec<(usize, usize)> = Vec::new();
        for t in cands {
            let key = (self.tasks[t].channel, self.tasks[t].queue);
            if full.contains(&key) {
                continue;
            }
            match self.pick_worker(t) {
                Some(w) => self.reserve(t, w),
                None if self.tasks[t].tried.is_empty() => full.push(key),
                None => {}
            }
        }
    }

    /// Longest-idle eligible worker, preferring ones not yet offered this task.
    pub(super) fn pick_worker(&self, t: usize) -> Option<usize> {
        let task = &self.tasks[t];
        let skill = QUEUES[task.queue].1;
        let best = |excluded: &[usize]| {
            (0..self.workers.len())
                .filter(|&w| {
                    let k = &self.workers[w];
                    let c = &k.chans[task.channel];
                    k.exists
                        && !k.deleted
                        && !k.draining
                        && k.activity == AVAILABLE
                        && c.available
                        && c.count < c.capacity
                        && k.skills.iter().any(|s| s == skill)
                        && !excluded.contains(&w)
                })
                .min_by_key(|&w| (self.workers[w].last_free, w))
        };
        let last: Vec<usize> = task.tried.last().copied().into_iter().collect();
        best(&task.tried).or_else(|| best(&last))
    }

    pub(super) fn reserve(&mut self, t: usize, w: usize) {
        let ts = self.tick();
        let rsid = new_sid(&mut self.rng, "WR");
        let ch = self.tasks[t].channel;
        self.workers[w].chans[ch].count += 1;
        let all = [Outcome::Accept, Outcome::Reject, Outcome::Timeout];
        let outcome = if self.tasks[t].abandon.is_some() {
            // The customer will hang up: this offer is declined or goes unanswered.
            all[weighted(self.rng.gen(), [0.0, 0.3])]
        } else if self.tasks[t].failures >= 3 {
            Outcome::Accept
        } else {
            all[weighted(self.rng.gen(), [0.78, 0.89])]
        };
        let delay = match outcome {
            Outcome::Accept if ch == VOICE => self.r(2 * MS_S, 12 * MS_S),
            Outcome::Accept => self.r(2 * MS_S, 14 * MS_S),
            Outcome::Reject => self.r(2 * MS_S, 8 * MS_S),
            Outcome::Timeout => 15 * MS_S + self.r(0, 300),
        };
        let task = &mut self.tasks[t];
        task.res.push(Res {
            sid: rsid,
            worker: w,
            created_ms: ts,
            version: 0,
            outcome,
        });
        let r = task.res.len() - 1;
        task.current = Some(r);
        task.tried.push(w);
        task.status = "reserved";
        task.version += 1;
        task.truth.reservations_created += 1;
        task.truth.first_reservation_ms.get_or_insert(ts);
        self.emit_res(t, r, ts, "created");
        self.at(ts + delay, Action::ResAnswer(t, r));
    }

    pub(super) fn res_answer(&mut self, t: usize, r: usize) {
        if self.tasks[t].current != Some(r) || self.tasks[t].status != "reserved" {
            return;
        }
        let ts = self.tick();
        let (w, outcome, created) = {
            let res = &self.tasks[t].res[r];
            (res.worker, res.outcome, res.created_ms)
        };
        let age = self.age(t, ts);
        let wsid = self.workers[w].sid.clone();
        let task = &mut self.tasks[t];
        task.res[r].version += 1;
        task.version += 1;
        if outcome == Outcome::Accept {
            task.status = "assigned";
            if task.truth.answered_in.is_none() {
                task.truth.answered_in = Some(age);
                task.truth.first_accept_ms = Some(ts);
                task.truth.accepted_worker_sid = Some(wsid);
                task.truth.accepted_reservation_created_ms = Some(created);
            }
            let handle = task.handle_ms;
            self.pending.retain(|&x| x != t);
            self.emit_res(t, r, ts, outcome.verb());
            self.at(ts + handle, Action::Wrapup(t));
        } else {
            task.status = "pending";
            task.current = None;
            task.failures += 1;
            let ch = task.channel;
            self.workers[w].chans[ch].count -= 1;
            self.emit_res(t, r, ts, outcome.verb());
            let routable = ts + self.r(200, 1_000);
            self.tasks[t].routable_at = routable;
            self.at(routable, Action::Dispatch);
        }
    }

    pub(super) fn wrapup(&mut self, t: usize) {
        let (Some(r), "assigned") = (self.tasks[t].current, self.tasks[t].status) else {
            return;
        };
        let ts = self.tick();
        let age = self.age(t, ts);
        let task = &mut self.tasks[t];
        task.status = "wrapping";
        task.version += 1;
        task.truth.acw_start = Some(age);
        let desc = format!("Task {} wrapping up", task.truth.sid);
        let wrap = task.wrap_ms;
        self.emit_task(t, ts, "task.wrapup", desc, vec![]);
        let ts = self.tick();
        self.tasks[t].res[r].version += 1;
        self.emit_res(t, r, ts, "wrapup");
        self.at(ts + wrap, Action::Complete(t));
    }

    pub(super) fn complete(&mut self, t: usize) {
        let (Some(r), "wrapping") = (self.tasks[t].current, self.tasks[t].status) else {
            return;
        };
        let ts = self.tick();
        let age = self.age(t, ts);
        let task = &mut self.tasks[t];
        task.status = "completed";
        task.version += 1;
        task.truth.total_time = Some(age);
        let desc = format!("Task {} completed", task.truth.sid);
        let more = vec![kv("TaskCompletedReason", "Task completed by worker")];
        self.emit_task(t, ts, "task.completed", desc, more);
        let ts = self.tick();
        let (w, ch) = (self.tasks[t].res[r].worker, self.tasks[t].channel);
        self.tasks[t].res[r].version += 1;
        self.tasks[t].current = None;
        self.workers[w].chans[ch].count -= 1;
        self.workers[w].last_free = ts;
        self.emit_res(t, r, ts, "completed");
    }

    // ----- workers --------------------------------------------------------

    /// Changes a worker's activity and emits worker.activity.update; returns its time.
    pub(super) fn set_activity(&mut self, w: usize, new: usize) -> i64 {
        let ts = self.tick();
        let k = &mut self.workers[w];
        let (prev, dt) = (k.activity, ts - k.since);
        k.log.push((prev, k.since, ts));
        k.activity = new;
        k.since = ts;
        k.version += 1;
        k.draining = false;
        if new == AVAILABLE {
            k.last_free = ts;
        }
        let more = vec![
            kv("WorkerPreviousActivitySid", &self.activity_sids[prev]),
            kv("WorkerPreviousActivityName", ACTIVITIES[prev].0),
            kv("WorkerTimeInPreviousActivity", dt.div_euclid(1000)),
            kv("WorkerTimeInPreviousActivityMs", dt),
        ];
        let desc = format!("Worker {} updated to {}", k.name, ACTIVITIES[new].0);
        self.emit_worker(w, ts, "worker.activity.update", desc, more);
        ts
    }

    pub(super) fn worker_create(&mut self, w: usize) {
        let ts = self.tick();
        let k = &mut self.workers[w];
        k.exists = true;
        k.since = ts;
        let desc = format!("Worker {} created", k.name);
        self.emit_worker(w, ts, "worker.created", desc, vec![]);
        let s = self.start;
        self.at_rand(ts, 5 * MS_M, 10 * MS_M, Action::SignOn(w));
        let d = self.r(10 * MS_M, 20 * MS_M);
        self.at_rand(s, 5 * MS_H, 6 * MS_H, Action::BreakStart(w, d));
        self.at_rand(s, 470 * MS_M, 484 * MS_M, Action::SignOff(w));
    }

    pub(super) fn sign_off(&mut self, w: usize) {
        let k = &self.workers[w];
        if !k.exists || k.deleted || k.activity == OFFLINE {
            return;
        }
        if k.activity == AVAILABLE && k.busy() {
            self.workers[w].draining = true;
            let t = self.clock + 5 * MS_S;
            self.at(t, Action::SignOff(w));
            return;
        }
        let ts = self.set_activity(w, OFFLINE);
        if self.doomed == Some(w) {
            self.at_rand(ts, 5 * MS_M, 15 * MS_M, Action::Delete(w));
        }
    }

    pub(super) fn delete(&mut self, w: usize) {
        if self.workers[w].activity != OFFLINE || self.workers[w].busy() {
            let t = self.clock + MS_M;
            self.at(t, Action::Delete(w));
            return;
        }
        let ts = self.tick();
        self.workers[w].deleted = true;
        let desc = format!("Worker {} deleted", self.workers[w].name);
        self.emit_worker(w, ts, "worker.deleted", desc, vec![]);
    }

    /// Cycles chat capacity 2 -> 3 -> 1 -> 2, waiting until the new capacity fits current work.
    pub(super) fn chat_capacity(&mut self, w: usize) {
        let k = &self.workers[w];
        if !k.exists || k.deleted {
            return;
        }
        let prev = k.chans[CHAT].capacity;
        let new = match prev {
            2 => 3,
            3 => 1,
            _ => 2,
        };
        if k.chans[CHAT].count > new {
            let t = self.clock + 20 * MS_S;
            self.at(t, Action::ChatCapacity(w));
            return;
        }
        let ts = self.tick();
        self.workers[w].chans[CHAT].capacity = new;
        self.workers[w].version += 1;
        let more = self.channel_params(w, CHAT, prev);
        let desc = format!("Worker {} chat capacity now {new}", self.workers[w].name);
        self.emit_worker(w, ts, "worker.capacity.update", desc, more);
    }

    pub(super) fn sms_available(&mut self, w: usize, on: bool) {
        let k = &self.workers[w];
        if !k.exists || k.deleted || k.chans[SMS].available == on {
            return;
        }
        let ts = self.tick();
        self.workers[w].chans[SMS].available = on;
        self.workers[w].version += 1;
        let cap = self.workers[w].chans[SMS].capacity;
        let more = self.channel_params(w, SMS, cap);
        let desc = format!("Worker {} sms available: {on}", self.workers[w].name);
        self.emit_worker(w, ts, "worker.channel.availability.update", desc, more);
    }

    /// Adds a missing skill, or a languages attribute when the worker has every skill.
    pub(super) fn attributes(&mut self, w: usize) {
        let k = &mut self.workers[w];
        if !k.exists || k.deleted {
            return;
        }
        let missing = QUEUES
            .iter()
            .find(|(_, s)| !k.skills.iter().any(|x| x == s));
        match missing {
            Some((_, s)) => k.skills.push(s.to_string()),
            None => k.languages = vec!["en".to_string(), "es".to_string()],
        }
        k.version += 1;
        let desc = format!("Worker {} attributes updated", k.name);
        let ts = self.tick();
        self.emit_worker(w, ts, "worker.attributes.update", desc, vec![]);
    }

    /// A worker's state now, as ground truth.
    pub(super) fn worker_truth(&self, k: &Worker) -> WorkerTruth {
        let (activity_sids, channel_sids) = (&self.activity_sids, &self.channel_sids);
        WorkerTruth {
            final_activity_name: ACTIVITIES[k.activity].0.to_string(),
            final_activity_sid: activity_sids[k.activity].clone(),
            final_available: ACTIVITIES[k.activity].1,
            final_activity_since_ms: k.since,
            activity_spans: k
                .log
                .iter()
                .map(|&(a, from, to)| ActivitySpan {
                    activity: ACTIVITIES[a].0.to_string(),
                    available: ACTIVITIES[a].1,
                    from_ms: from,
                    to_ms: to,
                })
                .collect(),
            deleted: k.deleted,
            channels: k
                .chans
                .iter()
                .enumerate()
                .map(|(i, c)| ChannelTruth {
                    unique_name: CHANNELS[i].to_string(),
                    task_channel_sid: channel_sids[i].clone(),
                    capacity: c.capacity,
                    available: c.available,
                })
                .collect(),
            sid: k.sid.clone(),
            name: k.name.clone(),
        }
    }

    pub(super) fn finish(mut self) -> SimDay {
        self.out.sort_by_key(|(ts, _)| *ts);
        let callbacks = std::mem::take(&mut self.out)
            .into_iter()
            .map(|(_, cb)| cb)
            .collect();
        let workers = self.workers.iter().map(|k| self.worker_truth(k)).collect();
        let tasks = self
            .tasks
            .into_iter()
            .map(|mut t| {
                t.truth.final_status = t.status.to_string();
                t.truth
            })
            .collect();
        SimDay {
            callbacks,
            tasks,
            workers,
        }
    }
}

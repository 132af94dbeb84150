package caddymodule

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hookgate/hookgate/spool"
)

// Metrics live for the whole process (the spool outlives configurations)
// and are registered with each configuration's registry. Labels are route
// names and small fixed sets: never event ids.
var (
	metricsOnce sync.Once
	metrics     struct {
		requests    *prometheus.CounterVec
		ack         *prometheus.HistogramVec
		dedupeHits  *prometheus.CounterVec
		attempts    *prometheus.CounterVec
		delivery    *prometheus.HistogramVec
		deadLetters *prometheus.CounterVec
		spool       spoolCollector
	}
)

func initMetrics() {
	metricsOnce.Do(func() {
		const ns, sub = "caddy", "webhook"
		counter := func(name, help string, labels ...string) *prometheus.CounterVec {
			return prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: name, Help: help,
			}, labels)
		}
		histogram := func(name, help string, buckets []float64) *prometheus.HistogramVec {
			return prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Namespace: ns, Subsystem: sub, Name: name, Help: help, Buckets: buckets,
			}, []string{"route"})
		}
		metrics.requests = counter("requests_total",
			"Webhook requests by route and outcome (accepted, duplicate, ignored, conflict, or the rejection's reason).",
			"route", "outcome")
		metrics.ack = histogram("ack_duration_seconds",
			"Time from a request's arrival to its 2xx answer (the durable write included).",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5})
		metrics.dedupeHits = counter("dedupe_hits_total",
			"Requests answered as duplicates of an event already received.", "route")
		metrics.attempts = counter("delivery_attempts_total",
			"Delivery attempts by route and outcome (delivered, retry, dead, released).", "route", "outcome")
		metrics.delivery = histogram("delivery_duration_seconds", "Duration of delivery attempts.", prometheus.DefBuckets)
		metrics.deadLetters = counter("dead_letters_total",
			"Deliveries that became dead letters after an attempt.", "route")
	})
}

// registerMetrics registers the collectors with a configuration's registry;
// registering them again (another module of the same configuration) is fine.
func registerMetrics(reg prometheus.Registerer) error {
	initMetrics()
	for _, c := range []prometheus.Collector{metrics.requests, metrics.ack, metrics.dedupeHits,
		metrics.attempts, metrics.delivery, metrics.deadLetters, metrics.spool} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// countRequest records a request's outcome.
func countRequest(route, outcome string) {
	initMetrics()
	metrics.requests.WithLabelValues(route, outcome).Inc()
	if outcome == "duplicate" {
		metrics.dedupeHits.WithLabelValues(route).Inc()
	}
}

// observeAck records the time to a 2xx answer.
func observeAck(route string, since time.Time) {
	initMetrics()
	metrics.ack.WithLabelValues(route).Observe(time.Since(since).Seconds())
}

// observeAttempt is the spool's Observe hook.
func observeAttempt(route string, a spool.Attempt, outcome string) {
	initMetrics()
	metrics.attempts.WithLabelValues(route, outcome).Inc()
	metrics.delivery.WithLabelValues(route).Observe(a.Duration.Seconds())
	if outcome == "dead" {
		metrics.deadLetters.WithLabelValues(route).Inc()
	}
}

// spoolCollector reports the open spools' state at scrape time.
type spoolCollector struct{}

var (
	spoolItemsDesc = prometheus.NewDesc("caddy_webhook_spool_items",
		"Stored items by route and state (queued, in_flight, scheduled, dead).", []string{"route", "state"}, nil)
	spoolBytesDesc = prometheus.NewDesc("caddy_webhook_spool_bytes",
		"Stored message bytes by route, dead letters included.", []string{"route"}, nil)
	oldestDesc = prometheus.NewDesc("caddy_webhook_oldest_pending_age_seconds",
		"Age of the oldest item not yet delivered or dead, by route.", []string{"route"}, nil)
	recordsDesc = prometheus.NewDesc("caddy_webhook_records",
		"Stored records by kind: dedupe (one per event id within its dedupe window), attempts (attempt records).", []string{"kind"}, nil)
	recordBytesDesc = prometheus.NewDesc("caddy_webhook_record_bytes",
		"Bytes of the stored records by kind, as they count toward max_record_bytes.", []string{"kind"}, nil)
	maxRecordBytesDesc = prometheus.NewDesc("caddy_webhook_max_record_bytes",
		"The budget of the dedupe and attempt records (max_record_bytes).", nil, nil)
	droppedDesc = prometheus.NewDesc("caddy_webhook_attempt_records_dropped_total",
		"Attempt records not written because the records had no room (the deliveries went on).", nil, nil)
)

// Describe implements prometheus.Collector.
func (spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{spoolItemsDesc, spoolBytesDesc, oldestDesc, recordsDesc, recordBytesDesc, maxRecordBytesDesc, droppedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (spoolCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	seen := map[string]bool{}     // one store per name, but route names could repeat across them
	var records spool.RecordUsage // summed over the stores
	open := false
	stores.Range(func(_, v any) bool {
		h, ok := v.(storeHandle)
		if !ok {
			return true
		}
		open = true
		r := h.Records()
		records.Dedupe.Count += r.Dedupe.Count
		records.Dedupe.Bytes += r.Dedupe.Bytes
		records.Attempts.Count += r.Attempts.Count
		records.Attempts.Bytes += r.Attempts.Bytes
		records.MaxBytes += r.MaxBytes
		records.AttemptRecordsDropped += r.AttemptRecordsDropped
		for _, rs := range routeStats(h.Backend) {
			if seen[rs.Route] {
				continue
			}
			seen[rs.Route] = true
			for state, n := range map[string]int64{"queued": rs.Queued, "in_flight": rs.InFlight, "scheduled": rs.Scheduled, "dead": rs.Dead} {
				ch <- prometheus.MustNewConstMetric(spoolItemsDesc, prometheus.GaugeValue, float64(n), rs.Route, state)
			}
			ch <- prometheus.MustNewConstMetric(spoolBytesDesc, prometheus.GaugeValue, float64(rs.Bytes), rs.Route)
			ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, rs.OldestAge(now).Seconds(), rs.Route)
		}
		return true
	})
	if !open {
		return
	}
	for kind, c := range map[string]spool.RecordCount{"dedupe": records.Dedupe, "attempts": records.Attempts} {
		ch <- prometheus.MustNewConstMetric(recordsDesc, prometheus.GaugeValue, float64(c.Count), kind)
		ch <- prometheus.MustNewConstMetric(recordBytesDesc, prometheus.GaugeValue, float64(c.Bytes), kind)
	}
	ch <- prometheus.MustNewConstMetric(maxRecordBytesDesc, prometheus.GaugeValue, float64(records.MaxBytes))
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(records.AttemptRecordsDropped))
}

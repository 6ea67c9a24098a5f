package fraud.streaming;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * The job's per-card operator: the card's rules in keyed state, over records parsed and validated
 * before the keyBy (ParseEvents; a rejected record is forwarded with its reason, never decided). The rules are features/compute.py:CardHistory and streaming/keyed.py:
 * CardState (the Python oracle the tests compare with), step for step:
 *
 * <ul>
 *   <li>history: the card's events (time s, amount), time-sorted, ties in arrival order, as one
 *       interleaved {@code double[]} ({@code ValueState}); {@code cleanupAt}: the armed clean-up
 *       timer; {@code pending}: on-time events waiting for the watermark ({@code ListState}, one
 *       append per event); {@code timerAt}: the earliest armed emission timer;
 *   <li>on time ({@code ts > wm}): on-watermark mode queues it and arms a timer unless an earlier
 *       one is armed; on-arrival mode emits it at once over what has arrived;
 *   <li>late ({@code ts <= wm}): emitted at once over the history (inserted first), flagged late,
 *       and beyond_lateness when {@code ts <= wm - allowed lateness};
 *   <li>a timer emits every pending event the watermark has passed (all inserted first, then each
 *       one's features), tidies the history and re-arms; clean-up drops events older than the
 *       retention (longest window + lateness) behind the watermark, keeping the last
 *       {@code keep_last} (recency).
 * </ul>
 */
public class CardFeatures extends KeyedProcessFunction<Long, Row, Row> {
    private static final long serialVersionUID = 1L;

    private final JobConfig c;
    private transient ValueState<double[]> history;
    private transient ValueState<Long> cleanupAt;
    private transient ValueState<Long> timerAt;
    private transient ListState<Row> pending;
    private transient Counter late;
    private transient Counter beyondLateness;
    private transient Counter rejected;

    public CardFeatures(JobConfig config) {
        this.c = config;
    }

    /** source (the raw record) -> ParseEvents -> keyBy(card) -> this operator; the output typed by
     * the spec's output columns. The operator runs in a task of its own (not chained to the
     * Table conversion and sink after it; a forward edge, so each card's order is kept): the
     * sink's JSON encoding costs more than the rules (measured, docs/streaming.md), and three
     * tasks share the work better than two. */
    public static DataStream<Row> apply(DataStream<Row> source, String configJson) {
        JobConfig config = new JobConfig(configJson);
        return source.map(new ParseEvents(config), ParseEvents.type(config))
                .uid("parse-events")
                .name("parse-events")
                .keyBy(new CardKey(), Types.LONG)
                .process(new CardFeatures(config), outputType(config))
                .uid("card-features")
                .name("card-features")
                .disableChaining();
    }

    /** The key: column 0 of ParseEvents' rows, the parsed card (card_of's for a rejected record). */
    public static final class CardKey implements KeySelector<Row, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long getKey(Row row) {
            return (Long) row.getField(0);
        }
    }

    static TypeInformation<?> flinkType(String sqlType) {
        switch (sqlType) {
            case "STRING": return Types.STRING;
            case "BIGINT": return Types.LONG;
            case "DOUBLE": return Types.DOUBLE;
            case "INT": return Types.INT;
            case "BOOLEAN": return Types.BOOLEAN;
            default: throw new IllegalArgumentException("unsupported column type " + sqlType);
        }
    }

    public static RowTypeInfo outputType(JobConfig c) {
        TypeInformation<?>[] types = new TypeInformation<?>[c.outputTypes.length];
        for (int i = 0; i < types.length; i++) {
            types[i] = flinkType(c.outputTypes[i]);
        }
        return new RowTypeInfo(types, c.outputNames);
    }

    static RowTypeInfo inputType(JobConfig c) {
        TypeInformation<?>[] types = new TypeInformation<?>[c.nInput()];
        for (int i = 0; i < types.length; i++) {
            types[i] = flinkType(c.outputTypes[i]);
        }
        String[] names = java.util.Arrays.copyOf(c.outputNames, c.nInput());
        return new RowTypeInfo(types, names);
    }

    @Override
    public void open(OpenContext openContext) {
        history = getRuntimeContext().getState(
                new ValueStateDescriptor<>("history", PrimitiveArrayTypeInfo.DOUBLE_PRIMITIVE_ARRAY_TYPE_INFO));
        cleanupAt = getRuntimeContext().getState(new ValueStateDescriptor<>("cleanup_at", Types.LONG));
        timerAt = getRuntimeContext().getState(new ValueStateDescriptor<>("timer_at", Types.LONG));
        pending = getRuntimeContext().getListState(new ListStateDescriptor<>("pending", inputType(c)));
        late = getRuntimeContext().getMetricGroup().counter("late");
        beyondLateness = getRuntimeContext().getMetricGroup().counter("beyondLateness");
        rejected = getRuntimeContext().getMetricGroup().counter("rejected");
    }

    // --- the rules (features/compute.py:CardHistory over an interleaved [t0, a0, t1, a1, ...]) -------
    static int bisectRight(double[] h, double ts, int hi) {
        int lo = 0;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (ts < h[2 * mid]) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        return lo;
    }

    static int bisectLeft(double[] h, double ts, int hi) {
        int lo = 0;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (h[2 * mid] < ts) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    static double[] add(double[] h, double ts, double amount) {
        int n = h == null ? 0 : h.length / 2;
        double[] out = new double[2 * n + 2];
        int i = n == 0 ? 0 : bisectRight(h, ts, n);
        if (i > 0) {
            System.arraycopy(h, 0, out, 0, 2 * i);
        }
        out[2 * i] = ts;
        out[2 * i + 1] = amount;
        if (i < n) {
            System.arraycopy(h, 2 * i, out, 2 * i + 2, 2 * (n - i));
        }
        return out;
    }

    static double[] dropBefore(double[] h, double cut, int keepLast) {
        int n = h.length / 2;
        int k = Math.min(bisectLeft(h, cut, n), Math.max(0, n - keepLast));
        if (k <= 0) {
            return h;
        }
        double[] out = new double[2 * (n - k)];
        System.arraycopy(h, 2 * k, out, 0, out.length);
        return out;
    }

    /** CardHistory.streaming: every aggregation over [ts - w, ts], then every recency value. */
    void features(double[] h, double ts, Row out, int at) {
        int n = h.length / 2;
        int hi = bisectRight(h, ts, n);
        for (int j = 0; j < c.aggNames.length; j++) {
            int lo = bisectLeft(h, ts - c.aggSeconds[j], hi);
            int op = c.aggOps[j];
            if (op == JobConfig.COUNT) {
                out.setField(at + j, (long) (hi - lo));
                continue;
            }
            double v;
            if (hi == lo) {
                v = 0.0; // compute.py's rule for an empty window (the event itself is always in it)
            } else if (op == JobConfig.SUM || op == JobConfig.AVG) {
                double s = 0;
                for (int i = lo; i < hi; i++) {
                    s += h[2 * i + 1];
                }
                v = op == JobConfig.SUM ? s : s / (hi - lo);
            } else {
                v = h[2 * lo + 1];
                for (int i = lo + 1; i < hi; i++) {
                    double a = h[2 * i + 1];
                    if (op == JobConfig.MIN ? a < v : a > v) {
                        v = a;
                    }
                }
            }
            out.setField(at + j, v);
        }
        int base = at + c.aggNames.length;
        for (int j = 0; j < c.recencyNth.length; j++) {
            int pos = hi - 1 - c.recencyNth[j];
            out.setField(base + j, pos >= 0 ? ts - h[2 * pos] : c.recencySentinel);
        }
    }

    /** keyed.event_time_ms: the source's CAST(ROUND(ts * 1000) AS BIGINT), half up. */
    public static long eventTimeMs(double ts) {
        double x = ts * 1000.0;
        double k = Math.floor(x);
        return (long) k + (x - k >= 0.5 ? 1 : 0);
    }

    long cleanupTimerMs(long tsMs) {
        long t = tsMs + c.retentionMs + 1;
        return -Math.floorDiv(-t, c.cleanupRoundMs) * c.cleanupRoundMs;
    }

    double retentionCut(long wm) {
        if (wm < Long.MIN_VALUE + c.retentionMs) {
            return Double.NEGATIVE_INFINITY; // nothing is that old (event times are >= 0)
        }
        return (wm - c.retentionMs) / 1000.0;
    }

    /** CardState.tidy: drop what left the retention; the clean-up timer for the excess, if needed. */
    private double[] tidy(double[] h, long wm, Context ctx) throws Exception {
        h = dropBefore(h, retentionCut(wm), c.keepLast);
        int n = h.length / 2;
        if (cleanupAt.value() == null && n > c.keepLast) {
            long at = cleanupTimerMs((long) Math.ceil(h[2 * (n - c.keepLast - 1)] * 1000));
            cleanupAt.update(at);
            ctx.timerService().registerEventTimeTimer(at);
        }
        return h;
    }

    /** The input columns of a parsed row (ParseEvents: key, columns..., raw, reason). */
    private Row inputRow(Row parsed) {
        Row row = new Row(c.nInput());
        for (int i = 0; i < c.nInput(); i++) {
            row.setField(i, parsed.getField(i + 1));
        }
        return row;
    }

    private Row output(Row input, double[] h, boolean isLate, boolean beyond) {
        int nIn = c.nInput();
        Row out = new Row(c.outputNames.length);
        for (int i = 0; i < nIn; i++) {
            out.setField(i, input.getField(i));
        }
        features(h, (Double) input.getField(3), out, nIn);
        int flags = nIn + c.nFeatures();
        out.setField(flags, isLate);
        out.setField(flags + 1, beyond);
        return out;
    }

    private Row reject(long card, String raw, String reason) {
        rejected.inc();
        Row out = new Row(c.outputNames.length);
        out.setField(1, card);
        out.setField(c.outputNames.length - 2, raw);
        out.setField(c.outputNames.length - 1, reason);
        return out;
    }

    @Override
    public void processElement(Row value, Context ctx, Collector<Row> out) throws Exception {
        int n = c.nInput();
        String reason = (String) value.getField(n + 2);
        if (reason != null) {
            out.collect(reject((Long) value.getField(0), (String) value.getField(n + 1), reason));
            return;
        }
        double ts = (Double) value.getField(4);
        double amount = (Double) value.getField(3);
        long tsMs = eventTimeMs(ts);
        long wm = ctx.timerService().currentWatermark();
        Row input = inputRow(value);
        if (tsMs > wm && !c.emitOnArrival) { // on time: wait for the watermark
            pending.add(input);
            Long armed = timerAt.value();
            if (armed == null || armed > tsMs) {
                timerAt.update(tsMs);
                ctx.timerService().registerEventTimeTimer(tsMs);
            }
            return;
        }
        boolean isLate = tsMs <= wm;
        boolean beyond = isLate && tsMs <= wm - c.allowedLatenessMs;
        double[] h = add(history.value(), ts, amount);
        Row row = output(input, h, isLate, beyond);
        history.update(tidy(h, wm, ctx));
        if (isLate) {
            late.inc();
        }
        if (beyond) {
            beyondLateness.inc();
        }
        out.collect(row);
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
        long wm = ctx.timerService().currentWatermark();
        Long cleanup = cleanupAt.value();
        boolean cleaning = cleanup != null && timestamp >= cleanup;
        long timerMs = Math.max(timestamp, wm);
        Long armed = timerAt.value();
        Long armedBefore = armed;
        if (armed != null && armed <= timerMs) {
            armed = null;
        }
        // Every pending event the watermark has passed (this timer's and any later one's).
        List<Row> due = new ArrayList<>();
        List<Row> rest = new ArrayList<>();
        for (Row p : pending.get()) {
            (eventTimeMs((Double) p.getField(3)) <= timerMs ? due : rest).add(p);
        }
        double[] h = history.value();
        boolean changed = false;
        if (!due.isEmpty()) {
            for (Row p : due) { // peers first: every due event is in every due window
                h = add(h, (Double) p.getField(3), (Double) p.getField(2));
            }
            for (Row p : due) {
                out.collect(output(p, h, false, false));
            }
            if (rest.isEmpty()) {
                pending.clear();
            } else {
                pending.update(rest);
            }
            h = tidy(h, wm, ctx);
            changed = true;
        }
        if (!rest.isEmpty() && armed == null) {
            long next = Long.MAX_VALUE;
            for (Row p : rest) {
                next = Math.min(next, eventTimeMs((Double) p.getField(3)));
            }
            armed = next;
            ctx.timerService().registerEventTimeTimer(next);
        }
        if (cleaning) { // CardState.clean_up
            h = h == null ? new double[0] : h;
            h = dropBefore(h, retentionCut(wm), c.keepLast);
            Long next = null;
            int n = h.length / 2;
            if (n > c.keepLast) {
                next = cleanupTimerMs((long) Math.ceil(h[2 * (n - c.keepLast - 1)] * 1000));
                ctx.timerService().registerEventTimeTimer(next);
            }
            cleanupAt.update(next);
            changed = true;
        }
        if (changed) {
            if ((h == null || h.length == 0) && rest.isEmpty() && cleanupAt.value() == null) {
                history.clear();
                cleanupAt.clear();
                armed = null;
            } else {
                history.update(h);
            }
        }
        if (armed == null ? armedBefore != null : !armed.equals(armedBefore)) {
            if (armed == null) {
                timerAt.clear();
            } else {
                timerAt.update(armed);
            }
        }
    }
}

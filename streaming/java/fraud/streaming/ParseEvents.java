package fraud.streaming;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.types.Row;

/**
 * Parse + validate each raw record before the keyBy, in the source's task (chained to it), so the
 * keyed operator's task only runs the per-card rules: the two tasks share the work (measured:
 * the keyed task was the busier one). Output: (key, the input columns, raw, reason): a valid
 * event has its fields and NULL raw/reason; a rejected one NULL fields, its text and the reason,
 * and key = its card when readable (streaming/parse.py:card_of), else 0.
 */
public final class ParseEvents implements MapFunction<Row, Row> {
    private static final long serialVersionUID = 1L;

    private final JobConfig c;
    private final EventParser parser;

    public ParseEvents(JobConfig config) {
        this.c = config;
        this.parser = new EventParser(config);
    }

    /** (key BIGINT, input columns..., raw STRING, reason STRING). */
    static RowTypeInfo type(JobConfig c) {
        RowTypeInfo input = CardFeatures.inputType(c);
        TypeInformation<?>[] types = new TypeInformation<?>[input.getArity() + 3];
        String[] names = new String[types.length];
        types[0] = Types.LONG;
        names[0] = "key";
        for (int i = 0; i < input.getArity(); i++) {
            types[i + 1] = input.getTypeAt(i);
            names[i + 1] = input.getFieldNames()[i];
        }
        types[types.length - 2] = Types.STRING;
        names[types.length - 2] = "raw";
        types[types.length - 1] = Types.STRING;
        names[types.length - 1] = "reason";
        return new RowTypeInfo(types, names);
    }

    @Override
    public Row map(Row value) {
        String raw = (String) value.getField(0);
        EventParser.Result r = parser.parse(raw);
        if (r.reason == null) {
            double bound = c.maxEventTime != null
                    ? c.maxEventTime
                    : System.currentTimeMillis() / 1000.0 + c.futureSkewSeconds;
            if (r.ts > bound) { // the source gave it the placeholder time 0: it never moved the watermark
                r = new EventParser.Result(c.timeField + " " + EventParser.reprDouble(r.ts)
                        + " is beyond the accepted event time "
                        + "(wall clock + future skew on a live stream, the data's end in a replay)");
            }
        }
        int n = c.nInput();
        Row out = new Row(n + 3);
        if (r.reason != null) {
            out.setField(0, parser.cardOf(raw));
            out.setField(n + 1, raw);
            out.setField(n + 2, r.reason);
            return out;
        }
        out.setField(0, r.card);
        out.setField(1, r.tid);
        out.setField(2, r.card);
        out.setField(3, r.amount);
        out.setField(4, r.ts);
        for (int i = 0; i < r.optional.length; i++) {
            out.setField(5 + i, r.optional[i]);
        }
        out.setField(5 + r.optional.length, r.label);
        return out;
    }
}

package fraud.streaming;

import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Everything the operator needs, read from the JSON that streaming/job.py:operator_config builds
 * out of features/spec.py and the job's settings: the streaming aggregations and recency values
 * (looped over, never named), the event's field names, the validity bounds, the output columns,
 * the allowed lateness, the emit mode and the far-future bound.
 */
public final class JobConfig implements Serializable {
    private static final long serialVersionUID = 1L;

    public static final int COUNT = 0;
    public static final int SUM = 1;
    public static final int AVG = 2;
    public static final int MIN = 3;
    public static final int MAX = 4;

    final String tidField;
    final String cardField;
    final String amountField;
    final String timeField;
    final String labelField;
    final List<String> eventFields = new ArrayList<>();
    final List<String> optionalFields = new ArrayList<>();
    final Map<String, Double> low = new HashMap<>();
    final Map<String, Double> high = new HashMap<>();
    final Map<String, String> lowText = new HashMap<>();
    final Map<String, String> highText = new HashMap<>();

    final String[] aggNames;
    final int[] aggOps;
    final long[] aggSeconds;
    final String[] recencyNames;
    final int[] recencyNth;
    final double recencySentinel;

    final long allowedLatenessMs;
    final boolean emitOnArrival;
    final long retentionMs;
    final int keepLast;
    final long cleanupRoundMs;
    /** A replay's fixed bound on the event time (s), or null: wall clock + skew. */
    final Double maxEventTime;

    final double futureSkewSeconds;
    final String[] outputNames;
    final String[] outputTypes;

    public JobConfig(String json) {
        JsonNode c;
        try {
            c = new ObjectMapper().readTree(json);
        } catch (IOException e) {
            throw new UncheckedIOException("operator configuration is not JSON", e);
        }
        JsonNode f = c.get("fields");
        tidField = f.get("tid").asText();
        cardField = f.get("card").asText();
        amountField = f.get("amount").asText();
        timeField = f.get("event_time").asText();
        labelField = f.get("label").asText();
        c.get("event_fields").forEach(n -> eventFields.add(n.asText()));
        c.get("optional_fields").forEach(n -> optionalFields.add(n.asText()));
        c.get("bounds").fields().forEachRemaining(e -> {
            JsonNode b = e.getValue();
            low.put(e.getKey(), b.get("low").asDouble());
            high.put(e.getKey(), b.get("high").asDouble());
            lowText.put(e.getKey(), b.get("low_text").asText());
            highText.put(e.getKey(), b.get("high_text").asText());
        });
        JsonNode aggs = c.get("aggregations");
        aggNames = new String[aggs.size()];
        aggOps = new int[aggs.size()];
        aggSeconds = new long[aggs.size()];
        for (int i = 0; i < aggs.size(); i++) {
            JsonNode a = aggs.get(i);
            aggNames[i] = a.get("name").asText();
            aggSeconds[i] = a.get("seconds").asLong();
            String op = a.get("operation").asText();
            switch (op) {
                case "count": aggOps[i] = COUNT; break;
                case "sum": aggOps[i] = SUM; break;
                case "avg": aggOps[i] = AVG; break;
                case "min": aggOps[i] = MIN; break;
                case "max": aggOps[i] = MAX; break;
                default: throw new IllegalArgumentException("unknown operation " + op);
            }
        }
        JsonNode rec = c.get("recency");
        recencyNames = new String[rec.size()];
        recencyNth = new int[rec.size()];
        for (int i = 0; i < rec.size(); i++) {
            recencyNames[i] = rec.get(i).get("name").asText();
            recencyNth[i] = rec.get(i).get("nth").asInt();
        }
        recencySentinel = c.get("recency_sentinel").asDouble();
        allowedLatenessMs = c.get("allowed_lateness_ms").asLong();
        emitOnArrival = "on-arrival".equals(c.get("emit").asText());
        retentionMs = c.get("retention_ms").asLong();
        keepLast = c.get("keep_last").asInt();
        cleanupRoundMs = c.get("cleanup_round_ms").asLong();
        JsonNode bound = c.get("max_event_time");
        maxEventTime = bound == null || bound.isNull() ? null : bound.asDouble();
        futureSkewSeconds = c.get("future_skew_seconds").asDouble();
        JsonNode out = c.get("output_columns");
        outputNames = new String[out.size()];
        outputTypes = new String[out.size()];
        for (int i = 0; i < out.size(); i++) {
            outputNames[i] = out.get(i).get(0).asText();
            outputTypes[i] = out.get(i).get(1).asText();
        }
        int expected = 4 + optionalFields.size() + 1 + aggNames.length + recencyNames.length + 4;
        if (outputNames.length != expected) {
            throw new IllegalArgumentException(
                    "output columns (" + outputNames.length + ") do not match the spec (" + expected + ")");
        }
    }

    int nInput() {
        return 4 + optionalFields.size() + 1;
    }

    int nFeatures() {
        return aggNames.length + recencyNames.length;
    }
}

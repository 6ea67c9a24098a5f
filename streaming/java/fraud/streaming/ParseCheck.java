package fraud.streaming;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Test harness (tests/test_java_operator.py): reads the operator configuration from the file named
 * by the first argument and raw records from stdin, one JSON string per line (so a record may hold
 * any character), and prints for each what the operator's parser decides: {"fields": [...]} or
 * {"reason": "..."}, and "card_of" (the partition key of a rejected record), one JSON line each.
 * Also prints event_time_ms and Python's float repr for numbers given as {"ms": x} / {"repr": x},
 * and the source's EVENT_TIME_MS of {"source": raw, "bound": seconds}.
 */
public final class ParseCheck {
    private ParseCheck() {}

    public static void main(String[] args) throws Exception {
        ObjectMapper json = new ObjectMapper();
        EventParser parser = new EventParser(new JobConfig(Files.readString(Path.of(args[0]))));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        String line;
        while ((line = in.readLine()) != null) {
            Map<String, Object> answer = new LinkedHashMap<>();
            Object item = json.readValue(line, Object.class);
            if (item instanceof Map && ((Map<?, ?>) item).containsKey("source")) {
                String raw = (String) ((Map<?, ?>) item).get("source");
                double bound = ((Number) ((Map<?, ?>) item).get("bound")).doubleValue();
                answer.put("time", new SourceFields.EventTimeMs(parser.timeField()).eval(raw, bound));
                out.println(json.writeValueAsString(answer));
                continue;
            }
            if (item instanceof Map) {
                Map<?, ?> m = (Map<?, ?>) item;
                double x = ((Number) (m.containsKey("ms") ? m.get("ms") : m.get("repr"))).doubleValue();
                answer.put("value", m.containsKey("ms") ? CardFeatures.eventTimeMs(x) : EventParser.reprDouble(x));
                out.println(json.writeValueAsString(answer));
                continue;
            }
            String raw = (String) item;
            EventParser.Result r = parser.parse(raw);
            if (r.reason != null) {
                answer.put("reason", r.reason);
            } else {
                List<Object> fields = new ArrayList<>(Arrays.asList(r.tid, r.card, r.amount, r.ts));
                fields.addAll(Arrays.asList(r.optional));
                fields.add(r.label);
                answer.put("fields", fields);
            }
            answer.put("card_of", parser.cardOf(raw));
            out.println(json.writeValueAsString(answer));
        }
    }
}

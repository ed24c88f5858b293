package fhirvalidator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;

/**
 * Offline FHIR R4 validator as a long-lived process.
 *
 * <p>Arguments: any number of directories of JSON files or single JSON files (a conformance
 * resource or a Bundle of them): StructureDefinitions, ValueSets, CodeSystems added to the R4 core.
 * Protocol: one line {"ready":true,...} once loaded, then for each resource read as one line on
 * stdin, one line {"errors":n,"warnings":n,"issues":[{"severity","location","message"}]}.
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws IOException {
    long start = System.nanoTime();
    // Libraries may print to System.out; only the protocol may use the real stdout.
    PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    System.setOut(System.err);

    FhirContext ctx = FhirContext.forR4();
    PrePopulatedValidationSupport extra = new PrePopulatedValidationSupport(ctx);
    int loaded = 0;
    for (String arg : args) {
      loaded += load(ctx.newJsonParser(), Path.of(arg), extra);
    }

    // No network: codes of systems we don't have (LOINC, SNOMED CT, the French TRE_/JDV_) are
    // reported as warnings, never errors; codes of systems we do have are checked in memory.
    UnknownCodeSystemWarningValidationSupport unknownSystems = new UnknownCodeSystemWarningValidationSupport(ctx);
    unknownSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);
    ValidationSupportChain chain = new ValidationSupportChain(
        new DefaultProfileValidationSupport(ctx),
        extra,
        new SnapshotGeneratingValidationSupport(ctx),
        new CommonCodeSystemsTerminologyService(ctx),
        new InMemoryTerminologyServerValidationSupport(ctx),
        unknownSystems);

    FhirInstanceValidator module = new FhirInstanceValidator(chain);
    module.setAnyExtensionsAllowed(true);
    module.setErrorForUnknownProfiles(false);
    FhirValidator validator = ctx.newValidator().registerValidatorModule(module);

    out.println("{\"ready\":true,\"loaded\":" + loaded + ",\"ms\":" + (System.nanoTime() - start) / 1_000_000 + "}");

    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      String result;
      try {
        result = render(validator.validateWithResult(line));
      } catch (RuntimeException e) {
        // Input HAPI can't parse, or a bug of the validator: reported for that resource, and the
        // process goes on. The stack trace goes to stderr for whoever debugs it.
        e.printStackTrace();
        result = "{\"errors\":1,\"warnings\":0,\"issues\":[{\"severity\":\"fatal\",\"location\":\"\",\"message\":"
            + quote("validator exception: " + e) + "}]}";
      }
      out.println(result);
    }
  }

  /** Adds the conformance resources of a file (a resource or a Bundle) or of a directory's *.json. */
  private static int load(IParser parser, Path path, PrePopulatedValidationSupport extra) throws IOException {
    if (Files.isDirectory(path)) {
      int n = 0;
      try (Stream<Path> files = Files.list(path)) {
        for (Path file : files.filter(p -> p.toString().endsWith(".json")).sorted().toList()) {
          n += load(parser, file, extra);
        }
      }
      return n;
    }
    IBaseResource resource = parser.parseResource(Files.readString(path, StandardCharsets.UTF_8));
    List<IBaseResource> resources = new ArrayList<>();
    if (resource instanceof Bundle bundle) {
      bundle.getEntry().forEach(e -> resources.add(e.getResource()));
    } else {
      resources.add(resource);
    }
    int n = 0;
    for (IBaseResource r : resources) {
      String type = r == null ? "" : r.fhirType();
      if (type.equals("StructureDefinition") || type.equals("ValueSet") || type.equals("CodeSystem")) {
        extra.addResource(r);
        n++;
      }
    }
    return n;
  }

  private static String render(ValidationResult result) {
    int errors = 0;
    int warnings = 0;
    StringBuilder issues = new StringBuilder();
    for (SingleValidationMessage m : result.getMessages()) {
      ResultSeverityEnum severity = m.getSeverity();
      if (severity == ResultSeverityEnum.ERROR || severity == ResultSeverityEnum.FATAL) {
        errors++;
      } else if (severity == ResultSeverityEnum.WARNING) {
        warnings++;
      }
      if (issues.length() > 0) {
        issues.append(',');
      }
      issues.append("{\"severity\":").append(quote(severity.getCode()))
          .append(",\"location\":").append(quote(m.getLocationString()))
          .append(",\"message\":").append(quote(m.getMessage())).append('}');
    }
    return "{\"errors\":" + errors + ",\"warnings\":" + warnings + ",\"issues\":[" + issues + "]}";
  }

  /** A JSON string literal (the only JSON this program writes is strings and counts). */
  static String quote(String s) {
    if (s == null) {
      return "\"\"";
    }
    StringBuilder b = new StringBuilder(s.length() + 2).append('"');
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        case '\n' -> b.append("\\n");
        case '\r' -> b.append("\\r");
        case '\t' -> b.append("\\t");
        default -> {
          if (c < 0x20) {
            b.append(String.format("\\u%04x", (int) c));
          } else {
            b.append(c);
          }
        }
      }
    }
    return b.append('"').toString();
  }
}

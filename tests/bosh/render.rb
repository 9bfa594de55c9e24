# frozen_string_literal: true

# Renders a BOSH job's templates the way the director does, for tests.
#
#   ruby render.rb render INPUT.json OUTPUT_DIR
#   ruby render.rb flatten FILE.yml          # one "path=json" line per scalar
#   ruby render.rb variables MANIFEST.yml [OPS_FILE...]
#
# INPUT.json names the job directory and where its properties come from:
#
#   {"job": "bosh/jobs/pcap-agent",
#    "properties": {...},                     # as in a manifest (nested hashes)
#    "spec": {"deployment": "cf", ...},       # overrides of the instance spec
#    "links": {"pcap-agent": {"provider_job": "bosh/jobs/pcap-agent",
#                             "properties": {...},
#                             "instances": [{"name": "diego-cell", "id": "...",
#                                            "index": 0, "az": "z1",
#                                            "address": "10.0.16.5"}]}}}
#
# or, instead of "properties", a manifest with ops-files and variables:
#
#   {"manifest": "m.yml", "ops_files": ["o.yml"], "vars": {"v": {...}},
#    "instance_group": "diego-cell"}           # or "addon": "pcap-agent"
#
# plus optionally "link_from": {"manifest": ..., "ops_files": [...],
# "vars": {...}, "instances": N}, which resolves the job's `consumes` entries
# against the jobs of another deployment, as the director does for shared
# links.
#
# As in the director (bosh-template's EvaluationContext and PropertyHelper),
# the job's properties are the spec's properties only, each taken from the
# manifest or else from its default (nil without one); p(name) raises
# UnknownProperty for nil, templates are ERB with trim mode "-", and files
# under bin/ are executable. Errors print "Error filling in template 'SRC'
# (line N: MESSAGE)" and exit 1.

require 'erb'
require 'fileutils'
require 'json'
require 'ostruct'
require 'securerandom'
require 'yaml'

module Bosh
  module Template
    class UnknownProperty < StandardError
      attr_reader :name

      def initialize(name)
        @name = name
        super("Can't find property '#{name}'")
      end
    end

    class UnknownLink < StandardError
      def initialize(name)
        super("Can't find link '#{name}'")
      end
    end

    class InvalidPropertyType < StandardError; end

    module PropertyHelper
      def copy_property(dst, src, name, default = nil)
        keys = name.split('.')
        src_ref = src
        dst_ref = dst
        keys.each do |key|
          unless src_ref.is_a?(Hash)
            raise InvalidPropertyType, "Property '#{name}' expects a hash, but received '#{src_ref.class}'"
          end

          src_ref = src_ref[key]
          break if src_ref.nil?
        end
        keys[0..-2].each do |key|
          dst_ref[key] ||= {}
          dst_ref = dst_ref[key]
        end
        dst_ref[keys[-1]] = src_ref.nil? ? default : src_ref
      end

      def lookup_property(collection, name)
        return nil if collection.nil?

        ref = collection
        name.split('.').each do |key|
          return nil unless ref.is_a?(Hash)

          ref = ref[key]
          return nil if ref.nil?
        end
        ref
      end
    end

    class ActiveElseBlock
      def initialize(context)
        @context = context
      end

      def else
        yield
      end

      def else_if_p(*names, &block)
        @context.if_p(*names, &block)
      end

      def else_if_link(name, &block)
        @context.if_link(name, &block)
      end
    end

    class InactiveElseBlock
      def else; end

      def else_if_p(*_names)
        InactiveElseBlock.new
      end

      def else_if_link(_name)
        InactiveElseBlock.new
      end
    end

    # An instance of a link: what `link(name).instances` yields.
    class EvaluationLinkInstance
      attr_reader :name, :index, :id, :az, :address, :properties, :bootstrap

      def initialize(name, index, id, az, address, properties, bootstrap)
        @name = name
        @index = index
        @id = id
        @az = az
        @address = address
        @properties = properties
        @bootstrap = bootstrap
      end
    end

    # `p` and `if_p` over the properties that `property_source` returns.
    module PropertyAccess
      include PropertyHelper

      def p(*args)
        names = Array(args[0])
        names.each do |name|
          result = lookup_property(property_source, name)
          return result unless result.nil?
        end
        return args[1] if args.length == 2

        raise UnknownProperty, names
      end

      def if_p(*names)
        values = names.map do |name|
          value = lookup_property(property_source, name)
          return ActiveElseBlock.new(self) if value.nil?

          value
        end
        yield(*values)
        InactiveElseBlock.new
      end
    end

    class EvaluationLink
      include PropertyAccess
      attr_reader :instances, :properties

      def initialize(instances, properties)
        @instances = instances
        @properties = properties
      end

      private

      def property_source
        @properties
      end
    end

    class EvaluationContext
      include PropertyAccess
      attr_reader :name, :index, :properties, :raw_properties, :spec

      def initialize(spec)
        @name = spec['job'].is_a?(Hash) ? spec['job']['name'] : nil
        @index = spec['index']
        @spec = openstruct(spec)
        @raw_properties = spec['properties'] || {}
        @properties = openstruct(@raw_properties)
        @links = spec['links'] || {}
      end

      def get_binding # rubocop:disable Naming/AccessorMethodName
        binding
      end

      def link(name)
        link_spec = lookup_property(@links, name)
        raise UnknownLink, name if link_spec.nil? || !link_spec.key?('instances')

        evaluation_link(link_spec)
      end

      def if_link(name)
        link_spec = lookup_property(@links, name)
        return ActiveElseBlock.new(self) if link_spec.nil? || !link_spec.key?('instances')

        yield evaluation_link(link_spec)
        InactiveElseBlock.new
      end

      private

      def property_source
        @raw_properties
      end

      def evaluation_link(link_spec)
        instances = link_spec['instances'].map do |i|
          EvaluationLinkInstance.new(i['name'], i['index'], i['id'], i['az'], i['address'],
                                     i['properties'], i['bootstrap'])
        end
        EvaluationLink.new(instances, link_spec['properties'])
      end

      def openstruct(object)
        case object
        when Hash then OpenStruct.new(object.transform_values { |v| openstruct(v) })
        when Array then object.map { |v| openstruct(v) }
        else object
        end
      end
    end
  end
end

# The director's view of a job: its spec, and its properties merged with the
# spec's defaults.
class Job
  include Bosh::Template::PropertyHelper
  attr_reader :dir, :spec

  def initialize(dir)
    @dir = dir
    @spec = YAML.safe_load(File.read(File.join(dir, 'spec')))
    raise "#{dir}/spec: no name" unless @spec['name'].is_a?(String)
  end

  def name
    @spec['name']
  end

  # Properties as the director gives them to templates: only those the spec
  # declares, from the manifest or else the default.
  def properties(manifest_properties)
    result = {}
    (@spec['properties'] || {}).each do |name, definition|
      default = definition.is_a?(Hash) ? definition['default'] : nil
      copy_property(result, manifest_properties || {}, name, default)
    end
    result
  end

  # Properties a `provides` entry exposes to consumers.
  def link_properties(link_name, manifest_properties)
    provide = (@spec['provides'] || []).find { |p| p['name'] == link_name }
    raise "job #{name} provides no link #{link_name}" unless provide

    all = properties(manifest_properties)
    result = {}
    (provide['properties'] || []).each { |n| copy_property(result, all, n) }
    result
  end

  def templates
    @spec['templates'] || {}
  end
end

# Applies ops-files (go-patch: replace and remove, paths with /key, /index,
# /-, /name=value and a trailing ? on optional segments) and variables.
module Manifest
  module_function

  def load(path, ops_files, vars)
    doc = YAML.safe_load(File.read(path))
    ops_files.each do |ops_path|
      YAML.safe_load(File.read(ops_path)).each do |op|
        apply(doc, op, ops_path)
      end
    end
    vars.nil? ? doc : interpolate(doc, vars)
  end

  def apply(doc, op, source)
    tokens = op['path'].sub(%r{\A/}, '').split('/')
    case op['type']
    when 'replace' then replace(doc, tokens, op['value'], source, op['path'])
    when 'remove' then remove(doc, tokens, source, op['path'])
    else raise "#{source}: unknown operation type #{op['type'].inspect}"
    end
  end

  def replace(node, tokens, value, source, path)
    token, *rest = tokens
    optional = token.end_with?('?')
    token = token.chomp('?')
    if node.is_a?(Array)
      if token == '-'
        raise "#{source}: #{path}: '-' must be last" unless rest.empty?

        node << value
        return
      end
      if token.include?('=')
        key, wanted = token.split('=', 2)
        index = node.index { |e| e.is_a?(Hash) && e[key] == wanted }
        if index.nil?
          raise "#{source}: #{path}: no element with #{token}" unless optional

          if rest.empty?
            node << value
            return
          end
          node << { key => wanted }
          index = node.size - 1
        end
      else
        index = Integer(token)
      end
      return node[index] = value if rest.empty?

      replace(node[index], rest, value, source, path)
    elsif node.is_a?(Hash)
      return node[token] = value if rest.empty?

      if node[token].nil?
        raise "#{source}: #{path}: no key #{token}" unless optional || rest.first.end_with?('?')

        node[token] = rest.first.chomp('?').include?('=') || rest.first == '-' ? [] : {}
      end
      replace(node[token], rest, value, source, path)
    else
      raise "#{source}: #{path}: cannot descend into #{node.inspect}"
    end
  end

  def remove(node, tokens, source, path)
    token, *rest = tokens
    token = token.chomp('?')
    key = if node.is_a?(Array) && token.include?('=')
            k, wanted = token.split('=', 2)
            node.index { |e| e.is_a?(Hash) && e[k] == wanted }
          elsif node.is_a?(Array)
            Integer(token)
          else
            token
          end
    return if key.nil?
    return(node.is_a?(Array) ? node.delete_at(key) : node.delete(key)) if rest.empty?

    remove(node[key], rest, source, path) unless node[key].nil?
  end

  # Replaces ((name)) and ((name.key)) as the director does with its config
  # server: a whole-string placeholder takes the value's type.
  def interpolate(node, vars)
    case node
    when Hash then node.transform_values { |v| interpolate(v, vars) }
    when Array then node.map { |v| interpolate(v, vars) }
    when String
      if (m = /\A\(\(([^()]+)\)\)\z/.match(node))
        lookup_var(m[1], vars)
      else
        node.gsub(/\(\(([^()]+)\)\)/) { lookup_var(Regexp.last_match(1), vars).to_s }
      end
    else node
    end
  end

  def lookup_var(reference, vars)
    name, *path = reference.strip.split('.')
    value = vars.fetch(name) { vars.fetch(name.sub(%r{\A/}, '')) { raise "Failed to find variable '#{name}'" } }
    path.each do |key|
      raise "Failed to find variable '#{reference}'" unless value.is_a?(Hash) && value.key?(key)

      value = value[key]
    end
    value
  end

  # The job named `job_name` in an instance group, or in an addon (runtime
  # config), with its instance group.
  def find_job(doc, job_name, instance_group: nil, addon: nil)
    if addon
      group = (doc['addons'] || []).find { |a| a['name'] == addon }
      raise "no addon #{addon}" unless group
    else
      group = (doc['instance_groups'] || []).find { |g| g['name'] == instance_group }
      raise "no instance group #{instance_group}" unless group
    end
    job = (group['jobs'] || []).find { |j| j['name'] == job_name }
    raise "no job #{job_name} in #{instance_group || addon}" unless job

    [job, group]
  end
end

# Renders every template of a job into a directory.
module Renderer
  module_function

  def instance_spec(job, properties, overrides, links)
    spec = {
      'name' => 'test-group',
      'id' => '7c8f5a4e-3f4b-4c8e-9d1a-0e2b6f3a9c01',
      'index' => 0,
      'az' => 'z1',
      'deployment' => 'test',
      'bootstrap' => true,
      'address' => '10.0.0.10',
      'ip' => '10.0.0.10',
      'networks' => { 'default' => { 'ip' => '10.0.0.10', 'default' => %w[dns gateway] } },
    }.merge(overrides || {})
    spec['job'] = { 'name' => job.name }
    spec['properties'] = properties
    spec['links'] = links
    spec
  end

  def render(job, spec, output_dir)
    sources = job.templates.map { |source, destination| [File.join(job.dir, 'templates', source), source, destination] }
    # The director renders the job's monit file with the same context.
    monit = File.join(job.dir, 'monit')
    sources << [monit, 'monit', 'monit'] if File.exist?(monit)
    sources.each do |path, source, destination|
      context = Bosh::Template::EvaluationContext.new(spec)
      erb = ERB.new(File.read(path), trim_mode: '-')
      erb.filename = source
      begin
        text = erb.result(context.get_binding)
      rescue StandardError => e
        line = e.backtrace&.find { |l| l.start_with?("#{source}:") }&.split(':')&.at(1)
        warn "Error filling in template '#{source}' (line #{line || '?'}: #{e.message})"
        exit 1
      end
      target = File.join(output_dir, destination)
      FileUtils.mkdir_p(File.dirname(target))
      File.write(target, text)
      File.chmod(destination.start_with?('bin/') ? 0o755 : 0o644, target)
    end
  end

  # Links of `job` resolved against `link_from`: another deployment's jobs
  # that provide a shared link of the consumed type, `from` naming its alias.
  def resolve_links(job, consumes, link_from, root)
    return {} unless link_from

    provider_doc = Manifest.load(File.join(root, link_from['manifest']),
                                 (link_from['ops_files'] || []).map { |o| File.join(root, o) },
                                 link_from['vars'] || {})
    (job.spec['consumes'] || []).each_with_object({}) do |consume, links|
      wanted = (consumes || {})[consume['name']] || {}
      alias_name = wanted['from'] || consume['name']
      found = []
      (provider_doc['instance_groups'] || []).each do |group|
        (group['jobs'] || []).each do |provider|
          # Only jobs whose spec provides a link of the consumed type qualify.
          spec_path = File.join(File.dirname(job.dir), provider['name'], 'spec')
          next unless File.exist?(spec_path)

          provided = (Job.new(File.dirname(spec_path)).spec['provides'] || []).find { |l| l['type'] == consume['type'] }
          next unless provided

          provides = (provider['provides'] || {}).fetch(provided['name'], {}) || {}
          next unless (provides['as'] || consume['name']) == alias_name

          raise "link #{consume['name']}: #{provider['name']} does not share it (shared: true)" unless provides['shared']

          found << [provider, group]
        end
      end
      if found.empty?
        next if consume['optional'] && !wanted['from']

        raise "link #{consume['name']}: no shared provider '#{alias_name}' in #{link_from['manifest']}"
      end
      provider, = found.first
      provider_job = Job.new(File.join(File.dirname(job.dir), provider['name']))
      count = link_from['instances'] || 2
      instances = found.flat_map do |_, group|
        (0...count).map do |index|
          id = format('%08x-0000-4000-8000-%012x', group['name'].sum, index)
          { 'name' => group['name'], 'index' => index, 'id' => id, 'az' => "z#{index % 2 + 1}",
            'address' => "#{id}.#{group['name']}.default.#{provider_doc['name']}.bosh", 'bootstrap' => index.zero? }
        end
      end
      links[consume['name']] = {
        'instances' => instances,
        'properties' => provider_job.link_properties(consume['name'], provider['properties']),
      }
    end
  end

  def main(input_path, output_dir)
    input = JSON.parse(File.read(input_path))
    root = input['root'] || Dir.pwd
    job = Job.new(File.join(root, input['job']))
    consumes = nil
    overrides = input['spec'] || {}
    if input['manifest']
      doc = Manifest.load(File.join(root, input['manifest']),
                          (input['ops_files'] || []).map { |o| File.join(root, o) }, input['vars'] || {})
      manifest_job, group = Manifest.find_job(doc, job.name, instance_group: input['instance_group'],
                                                             addon: input['addon'])
      manifest_properties = manifest_job['properties'] || {}
      consumes = manifest_job['consumes']
      overrides = { 'name' => group['name'], 'deployment' => doc['name'] || 'test' }.merge(overrides)
    else
      manifest_properties = input['properties'] || {}
    end
    links = {}
    (input['links'] || {}).each do |name, link|
      provider = Job.new(File.join(root, link['provider_job']))
      links[name] = { 'instances' => link['instances'] || [],
                      'properties' => provider.link_properties(name, link['properties'] || {}) }
    end
    links.merge!(resolve_links(job, consumes, input['link_from'], root))
    spec = instance_spec(job, job.properties(manifest_properties), overrides, links)
    render(job, spec, output_dir)
  end
end

# "a.b.0.c={json}" lines for every scalar of a YAML document.
def flatten(node, prefix, out)
  case node
  when Hash then node.each { |k, v| flatten(v, prefix.empty? ? k.to_s : "#{prefix}.#{k}", out) }
  when Array
    out << "#{prefix}=[]" if node.empty?
    node.each_with_index { |v, i| flatten(v, prefix.empty? ? i.to_s : "#{prefix}.#{i}", out) }
  else out << "#{prefix}=#{node.to_json}"
  end
  out
end

begin
  case ARGV[0]
  when 'render'
    Renderer.main(ARGV[1], ARGV[2])
  when 'flatten'
    puts flatten(YAML.safe_load(File.read(ARGV[1])), '', [])
  when 'variables'
    # Variables are not interpolated here: this lists their definitions.
    doc = Manifest.load(ARGV[1], ARGV[2..], nil)
    puts flatten({ 'variables' => doc['variables'] || [] }, '', [])
  else
    warn 'usage: render.rb render INPUT.json OUTPUT_DIR | flatten FILE.yml | variables MANIFEST [OPS...]'
    exit 2
  end
rescue StandardError => e
  warn e.message
  exit 1
end

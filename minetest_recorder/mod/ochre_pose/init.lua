-- Ochre's Minetest recorder reads this log to verify every commanded action against the engine's own
-- state and to write the GameFactory JSON (pos, yaw, pitch). One line per player per server step:
--   us_time x y z look_horizontal look_vertical controls in_water biome
-- us_time is minetest.get_us_time() (the monotonic clock the recorder also reads); angles in radians;
-- controls is a 0/1 string for up down left right jump sneak aux1 as the server last received them.
local path = minetest.get_worldpath() .. "/ochre_pose.log"
local log = assert(io.open(path, "w"))
local time_of_day = tonumber(minetest.settings:get("ochre_time_of_day") or "0.5")
-- Minetest has no sprint; aux1 (bound to the recorder's sprint key) sprints at Minecraft's 1.3x walk speed
-- so the policy's sprint segments mean the same as in the block world.
local SPRINT_SPEED = 1.3

-- Chat lines would be drawn into the recorded frames.
minetest.send_join_message = function() end
minetest.get_server_status = function() return "" end

minetest.register_on_joinplayer(function(player)
	minetest.set_timeofday(time_of_day)
	player:hud_set_flags({hotbar = false, healthbar = false, crosshair = false, wielditem = false,
		breathbar = false, minimap = false, minimap_radar = false})
end)

local function bit(b)
	return b and "1" or "0"
end

minetest.register_globalstep(function()
	for _, player in ipairs(minetest.get_connected_players()) do
		local p = player:get_pos()
		local c = player:get_player_control()
		local speed = c.aux1 and SPRINT_SPEED or 1.0
		if speed ~= player:get_physics_override().speed then
			player:set_physics_override({speed = speed})
		end
		local node = minetest.get_node_or_nil({x = p.x, y = p.y + 0.5, z = p.z})
		local wet = node ~= nil and minetest.get_item_group(node.name, "water") > 0
		local biome = minetest.get_biome_data(p)
		biome = biome and minetest.get_biome_name(biome.biome) or "unknown"
		log:write(string.format("%d %.4f %.4f %.4f %.5f %.5f %s%s%s%s%s%s%s %s %s\n", minetest.get_us_time(),
			p.x, p.y, p.z, player:get_look_horizontal(), player:get_look_vertical(),
			bit(c.up), bit(c.down), bit(c.left), bit(c.right), bit(c.jump), bit(c.sneak), bit(c.aux1), bit(wet), biome))
	end
	log:flush()
end)
